//! The commands that look and never send: `plan` reads a job's inputs as `submit` would and gathers what the
//! plan is computed from; `status` and `report` read a state database, never writing it. Each gathers facts
//! here and hands them to the pure renderers in [`crate::report`].

pub mod plan;
pub mod quotas;
pub mod state;

pub use plan::{PlanOptions, plan};
pub use quotas::{
    QuotasOptions, Wanted, of_model as quotas_of_model, quotas, request as request_quotas,
};
pub use state::{ReportOptions, Scope, report, status};
