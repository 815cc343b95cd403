//! Decoding the token endpoint's answer: a token, an RFC 6749 §5.2 error, or a clear reason
//! why neither. Pure: status, headers and body in; no I/O, so it can be fuzzed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::error::{OAuthError, Rejected};
use crate::token::{expiry_from_now, MAX_LIFETIME};
use crate::{AccessToken, Error};

/// How long an excerpt of a failing body may be, in characters.
const EXCERPT_CHARS: usize = 200;

/// What decoding needs besides the response.
pub(crate) struct DecodeContext<'a> {
    /// Lifetime of a token whose response has no `expires_in`.
    pub(crate) default_lifetime: Duration,
    /// Strings we sent that must never be echoed back into an error.
    pub(crate) redact: &'a [&'a str],
    /// The request carried a DPoP proof: a `DPoP` token is expected, and nothing else.
    pub(crate) dpop: bool,
}

/// Turn a complete response into a token or a typed error.
pub(crate) fn decode(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    context: &DecodeContext<'_>,
) -> Result<AccessToken, Error> {
    if status.is_redirection() {
        let location = headers
            .get(LOCATION)
            .map(|location| excerpt(location.as_bytes(), context.redact));
        let note = format!(
            "the token endpoint answered with a redirect{}; redirects are never followed, so \
             that credentials only go where configured: set the final token URL",
            location.map(|l| format!(" to {l:?}")).unwrap_or_default()
        );
        return Err(Error::rejected(Rejected {
            note: Some(note),
            ..Rejected::status(status)
        }));
    }
    let mut fields = parse_fields(headers, body);
    let decoded = decode_fields(status, headers, body, fields.as_ref(), context);
    // The fields hold a copy of the token (or whatever else the endpoint sent): wipe them.
    for value in fields.iter_mut().flat_map(|fields| fields.values_mut()) {
        wipe(value);
    }
    decoded
}

/// Every string in `value`, zeroized.
fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => zeroize::Zeroize::zeroize(text),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(fields) => fields.values_mut().for_each(wipe),
        _ => {}
    }
}

fn decode_fields(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    fields: Option<&Map<String, Value>>,
    context: &DecodeContext<'_>,
) -> Result<AccessToken, Error> {
    let oauth = fields.and_then(|fields| oauth_error(fields, context.redact));
    if !status.is_success() {
        let excerpt = (oauth.is_none() && !body.is_empty()).then(|| excerpt(body, context.redact));
        return Err(Error::rejected(Rejected {
            oauth,
            excerpt,
            retry_after: retry_after(headers),
            ..Rejected::status(status)
        }));
    }
    if let Some(oauth) = oauth {
        return Err(Error::rejected(Rejected {
            oauth: Some(oauth),
            ..Rejected::status(status)
        }));
    }
    let Some(fields) = fields else {
        let why = match serde_json::from_slice::<Value>(body) {
            Ok(value) => format!("a JSON {}, not an object", json_type(&value)),
            Err(error) => format!("neither a JSON object nor a form ({error})"),
        };
        return Err(Error::not_a_token_response(
            format!("the token endpoint answered {status}, but the body is {why}"),
            excerpt(body, context.redact),
        ));
    };
    let secret = access_token(fields)?;
    let issued_token_type = match fields.get("issued_token_type") {
        Some(Value::String(kind)) => Some(excerpt(kind.as_bytes(), context.redact)),
        _ => None,
    };
    check_token_type(
        fields,
        issued_token_type.is_some(),
        context.dpop,
        context.redact,
    )?;
    let lifetime = expires_in(fields, context.redact)?.unwrap_or(context.default_lifetime);
    let mut token = AccessToken::new(secret).with_expires_at(Some(expiry_from_now(lifetime)));
    if let Some(Value::String(scope)) = fields.get("scope") {
        token = token.with_scope(scope.clone());
    }
    if let Some(kind) = issued_token_type {
        token = token.with_issued_token_type(kind);
    }
    Ok(token)
}

/// The body as a map of fields: JSON, or a form when the server says it sent one.
fn parse_fields(headers: &HeaderMap, body: &[u8]) -> Option<Map<String, Value>> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase());
    let says_form = matches!(
        content_type.as_deref(),
        Some("application/x-www-form-urlencoded" | "text/plain")
    );
    let looks_like_json = body.trim_ascii_start().starts_with(b"{");
    if says_form && !looks_like_json {
        let fields: Map<String, Value> = form_urlencoded::parse(body)
            .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
            .collect();
        return (!fields.is_empty()).then_some(fields);
    }
    json_fields(body)
}

/// A JSON object's fields. Strings at the top level (the token, the error description) are
/// unescaped here, each into one buffer of its final size that [`decode`] wipes: serde_json
/// would unescape them through a scratch buffer of its own and free it unwiped.
fn json_fields(body: &[u8]) -> Option<Map<String, Value>> {
    let raw: BTreeMap<Cow<'_, str>, &RawValue> = serde_json::from_slice(body).ok()?;
    let mut fields = Map::new();
    for (name, value) in raw {
        let value = match value.get().strip_prefix('"') {
            Some(literal) => Value::String(unescaped(literal.strip_suffix('"')?)),
            None => serde_json::from_str(value.get()).ok()?,
        };
        fields.insert(name.into_owned(), value);
    }
    Some(fields)
}

/// The text of a JSON string literal (between its quotes), already checked by serde_json,
/// unescaped into a buffer that never grows (nothing unescapes to more bytes than it is
/// written with).
fn unescaped(literal: &str) -> String {
    let mut text = String::with_capacity(literal.len());
    let mut chars = literal.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        let unescaped = match chars.next() {
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('u') => utf16_escape(&mut chars),
            Some(other) => other,
            None => break,
        };
        text.push(unescaped);
    }
    text
}

/// The character of a `\uXXXX` escape whose `\u` was just read, joining a surrogate pair;
/// U+FFFD for a lone surrogate.
fn utf16_escape(chars: &mut std::str::Chars<'_>) -> char {
    fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
        (0..4).try_fold(0, |total, _| Some(total * 16 + chars.next()?.to_digit(16)?))
    }
    let Some(high) = hex4(chars) else {
        return char::REPLACEMENT_CHARACTER;
    };
    if !(0xD800..0xDC00).contains(&high) {
        return char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER);
    }
    let mut after = chars.clone();
    let low = (after.next() == Some('\\') && after.next() == Some('u'))
        .then(|| hex4(&mut after))
        .flatten()
        .filter(|low| (0xDC00..0xE000).contains(low));
    match low {
        Some(low) => {
            *chars = after;
            char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                .unwrap_or(char::REPLACEMENT_CHARACTER)
        }
        None => char::REPLACEMENT_CHARACTER,
    }
}

fn oauth_error(fields: &Map<String, Value>, redact: &[&str]) -> Option<OAuthError> {
    let Some(Value::String(code)) = fields.get("error") else {
        return None;
    };
    let text = |name: &str| match fields.get(name) {
        Some(Value::String(text)) => Some(excerpt(text.as_bytes(), redact)),
        _ => None,
    };
    Some(OAuthError {
        code: excerpt(code.as_bytes(), redact),
        description: text("error_description"),
        uri: text("error_uri"),
    })
}

fn access_token(fields: &Map<String, Value>) -> Result<String, Error> {
    match fields.get("access_token") {
        None | Some(Value::Null) => {
            Err(Error::invalid_response("the response has no access_token"))
        }
        Some(Value::String(token)) if token.is_empty() => {
            Err(Error::invalid_response("the access_token is empty"))
        }
        // RFC 6750 b64token is a subset of visible ASCII; anything else cannot be sent safely.
        Some(Value::String(token)) if !token.bytes().all(|b| b.is_ascii_graphic()) => {
            Err(Error::invalid_response(
                "the access_token contains characters not allowed in an HTTP header",
            ))
        }
        Some(Value::String(token)) => Ok(token.clone()),
        Some(other) => Err(Error::invalid_response(format!(
            "the access_token is a {}, not a string",
            json_type(other)
        ))),
    }
}

/// `token_type` must say Bearer, in any case. Absent is taken as Bearer, as most clients do.
/// A token exchange response (one with `issued_token_type`) may say `N_A` (RFC 8693 §2.2.1:
/// the issued token, a JWT say, is not an access token), and is then sent as a bearer token.
fn check_token_type(
    fields: &Map<String, Value>,
    exchanged: bool,
    dpop: bool,
    redact: &[&str],
) -> Result<(), Error> {
    if dpop {
        return match fields.get("token_type") {
            Some(Value::String(kind)) if kind.eq_ignore_ascii_case("dpop") => Ok(()),
            Some(Value::String(kind)) => Err(Error::invalid_response(format!(
                "the token request carried a DPoP proof, but the token endpoint issued a token \
                 of type {:?}, not DPoP: it does not bind tokens to keys for this client (enable \
                 DPoP for it, or remove .dpop(..))",
                excerpt(kind.as_bytes(), redact)
            ))),
            _ => Err(Error::invalid_response(
                "the token request carried a DPoP proof, but the response has no token_type \
                 DPoP",
            )),
        };
    }
    match fields.get("token_type") {
        Some(Value::String(kind)) if kind.eq_ignore_ascii_case("dpop") => {
            Err(Error::invalid_response(
                "the token endpoint issued a DPoP token, which needs a proof by a key with every \
                 request: give the client a key with .dpop(DpopKey::generate(..)?)",
            ))
        }
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(kind)) if kind.eq_ignore_ascii_case("bearer") => Ok(()),
        Some(Value::String(kind)) if exchanged && kind == "N_A" => Ok(()),
        Some(Value::String(kind)) if kind == "N_A" => Err(Error::invalid_response(
            "token_type N_A (RFC 8693: not an access token) without issued_token_type: the \
             token endpoint does not say what it issued, which RFC 8693 §2.2.1 requires with \
             N_A",
        )),
        Some(Value::String(kind)) => Err(Error::invalid_response(format!(
            "token_type {:?} is not supported: only Bearer tokens can be sent",
            excerpt(kind.as_bytes(), redact)
        ))),
        Some(other) => Err(Error::invalid_response(format!(
            "token_type is a {}, not a string",
            json_type(other)
        ))),
    }
}

/// `expires_in` in seconds: an integer or a string of digits; `None` when absent or null.
/// Huge values are clamped to [`MAX_LIFETIME`].
fn expires_in(fields: &Map<String, Value>, redact: &[&str]) -> Result<Option<Duration>, Error> {
    let seconds = match fields.get("expires_in") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => {
            if let Some(seconds) = number.as_u64() {
                seconds
            } else if number.as_i64().is_some() {
                return Err(Error::invalid_response(format!(
                    "expires_in is negative: {number}"
                )));
            } else if number.as_f64().is_some_and(|f| f >= u64::MAX as f64) {
                // serde_json reads integers past u64 as floats; they are huge, not fractional.
                u64::MAX
            } else {
                return Err(Error::invalid_response(format!(
                    "expires_in is not a whole number of seconds: {number}"
                )));
            }
        }
        Some(Value::String(digits))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            digits.bytes().fold(0u64, |total, digit| {
                total
                    .saturating_mul(10)
                    .saturating_add(u64::from(digit - b'0'))
            })
        }
        Some(Value::String(text)) => {
            return Err(Error::invalid_response(format!(
                "expires_in is not a number of seconds: {:?}",
                excerpt(text.as_bytes(), redact)
            )))
        }
        Some(other) => {
            return Err(Error::invalid_response(format!(
                "expires_in is a {}, not a number",
                json_type(other)
            )))
        }
    };
    Ok(Some(Duration::from_secs(seconds).min(MAX_LIFETIME)))
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    // delta-seconds too large for 64 bits means "longer than anything" (RFC 9111 §1.2.2).
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(MAX_LIFETIME));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A short, printable, redacted excerpt of untrusted bytes.
///
/// Redaction runs over all of `bytes` (at most the body limit) before cutting, so no cut can
/// leave part of a secret behind.
pub(crate) fn excerpt(bytes: &[u8], redact: &[&str]) -> String {
    const REDACTED: &str = "[redacted]";
    // Every intermediate copy may hold what we sent (an endpoint echoing the request): each is
    // wiped when dropped, and only what the excerpt can show is copied, into a buffer sized so
    // that it never grows.
    let text = Zeroizing::new(String::from_utf8_lossy(bytes).into_owned());
    let mut shown = Zeroizing::new(String::with_capacity((EXCERPT_CHARS + 1) * REDACTED.len()));
    let mut chars = 0;
    let mut rest = text.as_str();
    'scan: while !rest.is_empty() && chars <= EXCERPT_CHARS {
        for secret in redact.iter().filter(|secret| !secret.is_empty()) {
            if let Some(after) = rest.strip_prefix(*secret) {
                shown.push_str(REDACTED);
                chars += REDACTED.len();
                rest = after;
                continue 'scan;
            }
        }
        let next = rest.chars().next().map_or(1, char::len_utf8);
        shown.push_str(&rest[..next]);
        chars += 1;
        rest = &rest[next..];
    }
    let mut out: String = shown
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if chars > EXCERPT_CHARS || !rest.is_empty() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_unescape_as_serde_json_does_into_buffers_that_never_grow() {
        for literal in [
            r#""plain""#,
            r#""a\/b\\c\"d""#,
            r#""\b\f\n\r\t""#,
            r#""caf\u00e9 \u20ac""#,
            r#""\ud83d\ude00 smile""#,
            r#""ünïcödé as is""#,
        ] {
            let inner = &literal[1..literal.len() - 1];
            let ours = unescaped(inner);
            let theirs: String = serde_json::from_str(literal).unwrap();
            assert_eq!(ours, theirs, "{literal}");
            assert_eq!(ours.capacity(), inner.len(), "{literal}: grew");
        }
        // serde_json refuses lone surrogates; here they become U+FFFD (and so no token).
        for (literal, expected) in [
            (r"lone \ud83d surrogate", "lone \u{FFFD} surrogate"),
            (r"lone \ude00 low", "lone \u{FFFD} low"),
            (r"\ud83d\u0041 not a pair", "\u{FFFD}A not a pair"),
        ] {
            let ours = unescaped(literal);
            assert_eq!(ours, expected);
            assert_eq!(ours.capacity(), literal.len(), "{literal}: grew");
        }
    }

    #[test]
    fn top_level_strings_are_read_without_serde_json_unescaping_them() {
        let fields =
            json_fields(br#"{"access_token":"a\/b","expires_in":60,"x":{"y":[1]}}"#).unwrap();
        assert_eq!(fields["access_token"], Value::String("a/b".into()));
        assert_eq!(fields["expires_in"], Value::from(60));
        assert_eq!(fields["x"], serde_json::json!({"y": [1]}));
        assert!(json_fields(b"[1]").is_none());
        assert!(json_fields(b"{\"a\":").is_none());
    }

    #[test]
    fn n_a_without_issued_token_type_is_refused_saying_what_is_missing() {
        let fields = json_fields(br#"{"access_token":"t","token_type":"N_A"}"#).unwrap();
        let error = check_token_type(&fields, false, false, &[]).unwrap_err();
        assert!(
            error.to_string().contains("without issued_token_type"),
            "{error}"
        );
        assert!(check_token_type(&fields, true, false, &[]).is_ok());
    }
}
