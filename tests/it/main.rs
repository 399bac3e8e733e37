//! Integration tests: one binary, a module per area (ripgrep / jj style).

mod batch;
mod cache;
mod common;
mod config_errors;
mod emulator_cli;
mod emulator_errors;
mod emulator_quota;
mod emulator_quotas;
mod emulator_sdk;
mod fuzz;
mod inspect;
mod interrupt;
mod nightly;
mod numbers;
mod s3;
mod structure;
mod submit;
mod targets;
mod tiers;
mod unattended;
