//! What a failed call means, decided once: throttled (wait and retry, never fail the record), transient (retry
//! with backoff, a bounded number of times), permanent (fail the record with the message) or fatal (no record
//! can succeed: stop the job and say what to fix).

use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_types::retry::ErrorKind;

/// The class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A quota ran out: `ThrottlingException` (and `ServiceQuotaExceededException`).
    Throttled,
    /// Worth another try: 5xx, model not ready, timeouts, dropped connections, unreadable replies.
    Transient,
    /// This record cannot succeed: validation errors (too long, bad body).
    Permanent,
    /// No record can succeed: credentials, access to the model, an unknown model id.
    Fatal,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// Its class.
    pub class: Class,
    /// Bedrock's error code (`ThrottlingException`, …) or a transport code (`Timeout`, `ConnectionError`).
    pub code: String,
    /// The message.
    pub message: String,
}

/// Why no call of a job can succeed (a [`Class::Fatal`] error), for the hint the user gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The credentials may not call the model, or access to it is not enabled.
    AccessDenied,
    /// No such model or inference profile in the region.
    UnknownModel,
    /// The credentials expired.
    ExpiredCredentials,
    /// No credentials could be loaded.
    NoCredentials,
    /// Anything else no retry can fix.
    Other,
}

impl CallError {
    /// Bedrock's "Too many tokens per day": the daily token quota is used up, which waiting seconds does not cure.
    pub fn is_daily(&self) -> bool {
        self.class == Class::Throttled && self.message.to_ascii_lowercase().contains("per day")
    }

    /// Why the calls cannot succeed, when the error is fatal.
    pub fn stop(&self) -> Stop {
        match self.code.as_str() {
            "AccessDeniedException" => Stop::AccessDenied,
            "ResourceNotFoundException" => Stop::UnknownModel,
            "ExpiredTokenException" => Stop::ExpiredCredentials,
            NO_CREDENTIALS => Stop::NoCredentials,
            _ => Stop::Other,
        }
    }
}

// The code batchrun gives a failure to load credentials (the SDK fails before any request, so Bedrock names
// nothing).
const NO_CREDENTIALS: &str = "NoCredentials";

fn by_code(code: &str, status: u16) -> Class {
    match code {
        "ThrottlingException" | "ServiceQuotaExceededException" | "TooManyRequestsException" => {
            Class::Throttled
        }
        "ModelNotReadyException"
        | "ServiceUnavailableException"
        | "InternalServerException"
        | "ModelTimeoutException"
        | "ModelErrorException"
        | "ModelStreamErrorException" => Class::Transient,
        "AccessDeniedException"
        | "ResourceNotFoundException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException" => Class::Fatal,
        "ValidationException" => Class::Permanent,
        _ => match status {
            429 => Class::Throttled,
            500..=599 | 408 => Class::Transient,
            401 | 403 => Class::Fatal,
            _ => Class::Permanent,
        },
    }
}

/// Classifies an SDK error from any operation.
pub fn classify<E>(err: SdkError<E>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let e = service.err();
            let code = e
                .code()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP{status}"));
            let message = e
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| DisplayErrorContext(&err).to_string());
            CallError {
                class: by_code(&code, status),
                code,
                message,
            }
        }
        SdkError::TimeoutError(_) => CallError {
            class: Class::Transient,
            code: "Timeout".into(),
            message: "the call took longer than endpoint.timeout-secs".into(),
        },
        SdkError::ResponseError(_) => CallError {
            class: Class::Transient,
            code: "ResponseError".into(),
            message: DisplayErrorContext(&err).to_string(),
        },
        // A dropped or reset connection surfaces as I/O, a timeout, or "other" marked transient.
        SdkError::DispatchFailure(d)
            if d.is_io()
                || d.is_timeout()
                || matches!(
                    d.as_other(),
                    Some(ErrorKind::TransientError | ErrorKind::ServerError)
                ) =>
        {
            CallError {
                class: Class::Transient,
                code: "ConnectionError".into(),
                message: DisplayErrorContext(&err).to_string(),
            }
        }
        SdkError::DispatchFailure(d) if d.as_other() == Some(ErrorKind::ThrottlingError) => {
            CallError {
                class: Class::Throttled,
                code: "ConnectionThrottled".into(),
                message: DisplayErrorContext(&err).to_string(),
            }
        }
        // Credentials that cannot be loaded, a request that cannot be built: nothing will go better next time.
        _ => {
            let message = causes(&err);
            let code = if message.contains("credentials") {
                NO_CREDENTIALS
            } else {
                "ClientError"
            };
            CallError {
                class: Class::Fatal,
                code: code.into(),
                message,
            }
        }
    }
}

/// The error and its causes, each once, joined with ": " (no debug dumps).
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_classes() {
        assert_eq!(by_code("ThrottlingException", 429), Class::Throttled);
        assert_eq!(by_code("ModelNotReadyException", 429), Class::Transient);
        assert_eq!(
            by_code("ServiceUnavailableException", 503),
            Class::Transient
        );
        assert_eq!(by_code("ModelTimeoutException", 408), Class::Transient);
        assert_eq!(by_code("ValidationException", 400), Class::Permanent);
        assert_eq!(by_code("AccessDeniedException", 403), Class::Fatal);
        assert_eq!(by_code("ResourceNotFoundException", 404), Class::Fatal);
        assert_eq!(by_code("SomethingNew", 502), Class::Transient);
        assert_eq!(by_code("SomethingNew", 429), Class::Throttled);
        assert_eq!(by_code("SomethingNew", 400), Class::Permanent);
    }

    #[test]
    fn fatal_errors_say_why_no_call_can_succeed() {
        let e = |code: &str| CallError {
            class: Class::Fatal,
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(e("AccessDeniedException").stop(), Stop::AccessDenied);
        assert_eq!(e("ResourceNotFoundException").stop(), Stop::UnknownModel);
        assert_eq!(e("ExpiredTokenException").stop(), Stop::ExpiredCredentials);
        assert_eq!(e(NO_CREDENTIALS).stop(), Stop::NoCredentials);
        assert_eq!(e("UnrecognizedClientException").stop(), Stop::Other);
    }
}
