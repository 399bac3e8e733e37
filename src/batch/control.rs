//! Bedrock's control plane for batch inference, through `aws-sdk-bedrock`: create a model-invocation job with an
//! idempotency token, read its state, stop it. Errors are sorted into what waiting fixes and what it does not.

use std::time::Duration;

use aws_sdk_bedrock::Client;
use aws_sdk_bedrock::config::retry::RetryConfig;
use aws_sdk_bedrock::config::timeout::TimeoutConfig;
use aws_sdk_bedrock::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrock::types::{
    ModelInvocationJobInputDataConfig, ModelInvocationJobOutputDataConfig,
    ModelInvocationJobS3InputDataConfig, ModelInvocationJobS3OutputDataConfig, ModelInvocationType,
    S3InputFormat,
};

use crate::checkpoint::{BatchJobRow, BatchProgress};
use crate::job::{Api, BatchSettings};

/// A control-plane call that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    /// What to do about it.
    pub class: ControlClass,
    /// The error code (`ValidationException`, …) or `Network`.
    pub code: String,
    /// Bedrock's message.
    pub message: String,
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// How a control-plane error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlClass {
    /// Throttled, too many jobs in flight, a server error or the network: try again at the next poll.
    Wait,
    /// The job named is unknown to Bedrock.
    NotFound,
    /// Refused for what was asked (role, staging, model, limits): asking again does not help.
    Refused,
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: SdkError<E, aws_sdk_bedrock::config::http::HttpResponse>,
) -> ControlError {
    let (code, message) = (
        err.code().unwrap_or("Network").to_string(),
        err.message().map_or_else(
            || aws_sdk_bedrock::error::DisplayErrorContext(&err).to_string(),
            str::to_string,
        ),
    );
    let class = match code.as_str() {
        "ResourceNotFoundException" => ControlClass::NotFound,
        "ValidationException"
        | "AccessDeniedException"
        | "ConflictException"
        | "UnrecognizedClientException" => ControlClass::Refused,
        _ => match &err {
            SdkError::ServiceError(e)
                if e.raw().status().as_u16() < 500
                    && code != "ThrottlingException"
                    && code != "ServiceQuotaExceededException"
                    && code != "TooManyRequestsException" =>
            {
                ControlClass::Refused
            }
            _ => ControlClass::Wait,
        },
    };
    ControlError {
        class,
        code,
        message,
    }
}

/// Whether a batch job's status is an end: nothing more will come of it.
pub fn ended(status: &str) -> bool {
    matches!(
        status,
        "Completed" | "PartiallyCompleted" | "Failed" | "Stopped" | "Expired"
    )
}

/// The control-plane client for one job's batch jobs.
#[derive(Debug, Clone)]
pub struct Control {
    client: Client,
}

// Control-plane calls are small; one that takes longer than this is retried at the next poll.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Control {
    /// A client from the same AWS configuration as the job's runtime client (`sdk`). Retries are the
    /// SDK's standard ones: a control-plane call is rare and not part of the budget.
    pub fn new(sdk: &aws_config::SdkConfig) -> Control {
        let config = aws_sdk_bedrock::config::Builder::from(sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            )
            .build();
        Control {
            client: Client::from_conf(config),
        }
    }

    /// CreateModelInvocationJob for a staged shard; the shard's token makes a repeated create return the job
    /// the first one made.
    pub async fn create(
        &self,
        row: &BatchJobRow,
        model: &str,
        api: Api,
        settings: &BatchSettings,
    ) -> Result<String, ControlError> {
        let input = ModelInvocationJobS3InputDataConfig::builder()
            .s3_input_format(S3InputFormat::Jsonl)
            .s3_uri(&row.input_uri)
            .build()
            .expect("the URI is set");
        let output = ModelInvocationJobS3OutputDataConfig::builder()
            .s3_uri(&row.output_uri)
            .build()
            .expect("the URI is set");
        // Converse bodies go as Converse (the user guide's `modelInvocationType`); native bodies as InvokeModel.
        let kind = match api {
            Api::Converse => ModelInvocationType::Converse,
            Api::Invoke | Api::Embed => ModelInvocationType::InvokeModel,
        };
        let out = self
            .client
            .create_model_invocation_job()
            .job_name(&row.name)
            .role_arn(&settings.role_arn)
            .client_request_token(&row.token)
            .model_id(model)
            .input_data_config(ModelInvocationJobInputDataConfig::S3InputDataConfig(input))
            .output_data_config(ModelInvocationJobOutputDataConfig::S3OutputDataConfig(
                output,
            ))
            .timeout_duration_in_hours(settings.timeout_hours as i32)
            .model_invocation_type(kind)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.job_arn().to_string())
    }

    /// GetModelInvocationJob: its status, message and counts.
    pub async fn get(&self, arn: &str) -> Result<BatchProgress, ControlError> {
        let out = self
            .client
            .get_model_invocation_job()
            .job_identifier(arn)
            .send()
            .await
            .map_err(classify)?;
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        Ok(BatchProgress {
            status: out.status().map_or("Submitted", |s| s.as_str()).to_string(),
            message: out.message().map(str::to_string),
            processed: n(out.processed_record_count()),
            succeeded: n(out.success_record_count()),
            errored: n(out.error_record_count()),
        })
    }

    /// The ARN and status of the batch job named `name`, if Bedrock has one (ListModelInvocationJobs): for a
    /// job whose create may have gone through before its ARN was noted.
    pub async fn find(&self, name: &str) -> Result<Option<(String, String)>, ControlError> {
        let mut pages = self
            .client
            .list_model_invocation_jobs()
            .name_contains(name)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify)?;
            if let Some(j) = page
                .invocation_job_summaries()
                .iter()
                .find(|j| j.job_name() == name)
            {
                let status = j.status().map_or("Submitted", |s| s.as_str());
                return Ok(Some((j.job_arn().to_string(), status.to_string())));
            }
        }
        Ok(None)
    }

    /// StopModelInvocationJob.
    pub async fn stop(&self, arn: &str) -> Result<(), ControlError> {
        self.client
            .stop_model_invocation_job()
            .job_identifier(arn)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}
