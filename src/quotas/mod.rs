//! The account's quotas: Bedrock's per-model quotas as Service Quotas names them ([`names`]), matched to a
//! job's model id.

pub mod names;
