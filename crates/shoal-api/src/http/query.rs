//! A request's query string and headers, decoded as K2V clients send them.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::HeaderMap;
use percent_encoding::percent_decode_str;

use super::reply::CAUSALITY_HEADER;
use crate::causality::CausalContext;

/// Longest long poll, as the spec allows.
pub(super) const MAX_POLL_SECS: u64 = 600;

/// A request's query parameters, decoded as HTML forms encode them (`+` is a space, as Garage
/// reads them), and borrowed from the request unless an escape had to be decoded. A handful at
/// most: a list searched in order costs less than building a hash map for every request.
pub(super) struct Query<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl Query<'_> {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Parses a query string; a parameter given twice, or not UTF-8 once decoded, is refused: a
/// signature covers the sorted pairs, so which of two values counts must not be a guess.
pub(super) fn parse_query(raw: &str) -> Result<Query<'_>, String> {
    let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    for p in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let k = form_decode(k)?;
        if pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("query parameter {k} is given more than once"));
        }
        pairs.push((k, form_decode(v)?));
    }
    Ok(Query(pairs))
}

/// A query component decoded: `+` is a space, then percent escapes; UTF-8 or refused.
pub(super) fn form_decode(s: &str) -> Result<Cow<'_, str>, String> {
    let not_utf8 = |_| "a query parameter is not UTF-8".to_string();
    if s.contains('+') {
        let spaced = s.replace('+', " ");
        let decoded = percent_decode_str(&spaced)
            .decode_utf8()
            .map_err(not_utf8)?;
        Ok(Cow::Owned(decoded.into_owned()))
    } else {
        percent_decode_str(s).decode_utf8().map_err(not_utf8)
    }
}

/// A listing's `start` must lie within its `prefix`, as Garage requires (400 otherwise).
pub(super) fn check_start_in_prefix(
    prefix: Option<&str>,
    start: Option<&str>,
) -> Result<(), String> {
    match (prefix, start) {
        (Some(p), Some(s)) if !s.starts_with(p) => {
            Err(format!("start {s:?} does not begin with prefix {p:?}"))
        }
        _ => Ok(()),
    }
}

pub(super) fn required<'q>(q: &'q Query<'_>, name: &str) -> Result<&'q str, String> {
    q.get(name)
        .ok_or_else(|| format!("query parameter {name} is required"))
}

pub(super) fn parse_token(t: &str) -> Result<CausalContext, String> {
    CausalContext::decode(t).map_err(|e| e.to_string())
}

pub(super) fn header_token(h: &HeaderMap) -> Result<Option<CausalContext>, String> {
    match h.get(CAUSALITY_HEADER) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| "causality token is not ASCII".to_string())?;
            parse_token(s).map(Some)
        }
    }
}

pub(super) fn poll_timeout(q: &Query<'_>) -> Result<Duration, String> {
    let secs = match q.get("timeout") {
        None => 300,
        Some(t) => t
            .parse::<u64>()
            .map_err(|_| format!("timeout {t} is not a number of seconds"))?,
    };
    Ok(Duration::from_secs(secs.min(MAX_POLL_SECS)))
}
