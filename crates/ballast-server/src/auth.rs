//! Inbound authentication: a gateway key in `Authorization: Bearer …` or `x-api-key: …` (whichever the
//! client's SDK sends), compared in constant time against the configured keys.

use http::HeaderMap;

use ballast_core::config::Secret;

/// Whether the request presents one of `keys`. With no keys configured every request passes.
pub fn authorized(keys: &[Secret], headers: &HeaderMap) -> bool {
    if keys.is_empty() {
        return true;
    }
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let x_api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let goog = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
    [bearer, x_api_key, goog]
        .into_iter()
        .flatten()
        .any(|presented| {
            keys.iter()
                .any(|k| constant_time_eq(k.expose().as_bytes(), presented.as_bytes()))
        })
}

/// Compares without an early exit on the first differing byte, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn each_sdk_style_is_accepted() {
        let keys = vec![Secret::new("gw-secret")];
        assert!(authorized(
            &keys,
            &headers(&[("authorization", "Bearer gw-secret")])
        ));
        assert!(authorized(&keys, &headers(&[("x-api-key", "gw-secret")])));
        assert!(authorized(
            &keys,
            &headers(&[("x-goog-api-key", "gw-secret")])
        ));
        assert!(!authorized(&keys, &headers(&[("x-api-key", "gw-secreT")])));
        assert!(!authorized(
            &keys,
            &headers(&[("authorization", "gw-secret")])
        ));
        assert!(!authorized(&keys, &headers(&[])));
        assert!(authorized(&[], &headers(&[])));
    }
}
