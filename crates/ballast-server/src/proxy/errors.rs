//! The error a client gets when no target answered, or when an upstream refusal is its own to see.

use super::*;

/// A `retry-after` header value (whole seconds, rounded up) for a wait.
pub(super) fn retry_after_header(wait: Duration) -> Option<HeaderValue> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from_str(&secs.to_string()).ok()
}

/// An upstream 4xx the client must see as is: same status, the upstream's message, the client's format.
/// On the same-format path the upstream's own body goes through; otherwise it is re-rendered.
pub(super) fn upstream_client_error(
    format: ApiFormat,
    rid: &RequestId,
    target: &PreparedTarget,
    failure: Failure,
    same_format: bool,
) -> EdgeError {
    let Failure::Status {
        status,
        message,
        retry_after,
        body,
        ..
    } = failure
    else {
        let e = ClientError::new(
            ErrorKind::BadGateway,
            format!("{}: {failure}", target.label),
        );
        return EdgeError::new(format, rid.as_str(), e);
    };
    let mut error = ClientError::new(
        ErrorKind::from_status(status),
        message.unwrap_or_else(|| format!("{}: HTTP {status}", target.label)),
    );
    error.status = status;
    let mut e = EdgeError::new(format, rid.as_str(), error);
    e.log_line = Some(format!(
        "{}: HTTP {status} (the provider's message is not logged)",
        target.label
    ));
    e.retry_after = retry_after.and_then(retry_after_header);
    // Same format: the upstream's own error body is already what this client's SDK expects.
    e.passthrough = (same_format && !body.is_empty()).then_some(body);
    e
}

/// 503 with a `retry-after` saying when trying again may help (a breaker's next probe, else 1 s).
pub(super) fn unavailable(
    failures: &[(&PreparedTarget, Failure)],
) -> (ErrorKind, u16, Option<HeaderValue>) {
    let wait = failures
        .iter()
        .filter_map(|(_, f)| match f {
            Failure::Skipped { retry_in, .. } => *retry_in,
            _ => None,
        })
        .min()
        .map_or(1, |d| d.as_secs().clamp(1, 60));
    (
        ErrorKind::Unavailable,
        503,
        HeaderValue::from_str(&wait.to_string()).ok(),
    )
}

/// Every target failed: one error naming each target and its cause. A single failure keeps its own
/// kind (an upstream 529 stays 529, a refused connection is 502, a timeout 504); several give 503
/// with `retry-after`.
pub(super) fn all_failed(
    format: ApiFormat,
    rid: &RequestId,
    route: &str,
    failures: Vec<(&PreparedTarget, Failure)>,
) -> EdgeError {
    let causes: Vec<String> = failures
        .iter()
        .map(|(t, f)| format!("{} ({f})", t.label))
        .collect();
    let attempted: Vec<&Failure> = failures
        .iter()
        .map(|(_, f)| f)
        .filter(|f| {
            !matches!(
                f,
                Failure::Untranslatable { .. } | Failure::Skipped { .. } | Failure::OutOfTime
            )
        })
        .collect();
    let any_skipped = failures
        .iter()
        .any(|(_, f)| matches!(f, Failure::Skipped { .. } | Failure::OutOfTime));
    if attempted.is_empty() && !any_skipped {
        // No target could even be asked: the request is beyond every target (or malformed).
        let param = failures.iter().find_map(|(_, f)| match f {
            Failure::Untranslatable { param, .. } => param.clone(),
            _ => None,
        });
        let message = if let [
            (
                _,
                Failure::Untranslatable {
                    message,
                    invalid: true,
                    ..
                },
            ),
        ] = failures.as_slice()
        {
            message.clone()
        } else {
            format!(
                "no target of route {route:?} can serve this request: {}",
                causes.join(", ")
            )
        };
        let mut e = EdgeError::new(
            format,
            rid.as_str(),
            ClientError::new(ErrorKind::InvalidRequest, message).with_param(param),
        );
        e.log_line = Some(format!(
            "no target of route {route:?} can serve this request"
        ));
        return e;
    }
    // Nothing answered in time, and nothing else went wrong: a timeout.
    let all_timeouts = !attempted.is_empty()
        && failures
            .iter()
            .all(|(_, f)| matches!(f, Failure::Timeout(..) | Failure::OutOfTime));
    let (kind, status, retry_after) = match attempted.as_slice() {
        _ if all_timeouts => (ErrorKind::Timeout, 504, None),
        // Several targets failed (tried or skipped): the route as a whole is unavailable.
        _ if failures.len() > 1 => unavailable(&failures),
        // The provider refused Ballast's own credentials: the gateway is misconfigured, not the client.
        [
            Failure::Status {
                status: 401 | 403, ..
            },
        ] => (ErrorKind::BadGateway, 502, None),
        [
            Failure::Status {
                status,
                retry_after,
                ..
            },
        ] => (
            ErrorKind::from_status(*status),
            *status,
            retry_after.and_then(retry_after_header),
        ),
        [Failure::Connect(_) | Failure::Transport(_) | Failure::BadResponse(_)] => {
            (ErrorKind::BadGateway, 502, None)
        }
        _ => unavailable(&failures),
    };
    let summaries: Vec<String> = failures
        .iter()
        .map(|(t, f)| format!("{} ({})", t.label, f.summary()))
        .collect();
    let message = if failures.len() == 1 {
        let (t, f) = &failures[0];
        format!("{}: {f}", t.label)
    } else {
        format!(
            "all targets of route {route:?} failed: {}",
            causes.join(", ")
        )
    };
    let mut error = ClientError::new(kind, message);
    error.status = status;
    let mut e = EdgeError::new(format, rid.as_str(), error);
    e.retry_after = retry_after;
    e.stale_ok = true;
    e.log_line = Some(format!(
        "all targets of route {route:?} failed: {}",
        summaries.join(", ")
    ));
    e
}
