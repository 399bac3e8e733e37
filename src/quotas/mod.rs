//! The account's quotas: Bedrock's per-model quotas as Service Quotas names them ([`names`]), read from the
//! account and matched to a job's model id ([`account`]).

pub mod account;
pub mod names;

pub use account::{AccountQuota, QuotasError};
