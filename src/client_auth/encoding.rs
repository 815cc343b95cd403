//! The form encodings of credentials (RFC 6749 §2.3.1, Appendix B), each in a buffer allocated
//! once at its largest size, so that no partial copy of a secret is freed unwiped.

use base64::Engine as _;
use zeroize::Zeroizing;

/// `application/x-www-form-urlencoded` encoding of one value.
pub(crate) fn urlencode(value: &str) -> Zeroizing<String> {
    let mut encoded = Zeroizing::new(String::with_capacity(3 * value.len()));
    for chunk in form_urlencoded::byte_serialize(value.as_bytes()) {
        encoded.push_str(chunk);
    }
    encoded
}

/// The encoding of one Basic credential (RFC 6749 §2.3.1), with a space as `%20` rather
/// than `+`: servers that percent-decode only (Authlib, for one) read `+` as a plus sign,
/// while `%20` is a space under both readings.
pub(crate) fn basic_urlencode(value: &str) -> Zeroizing<String> {
    let mut encoded = Zeroizing::new(String::with_capacity(3 * value.len()));
    for chunk in form_urlencoded::byte_serialize(value.as_bytes()) {
        encoded.push_str(if chunk == "+" { "%20" } else { chunk });
    }
    encoded
}

/// The base64 credentials of the Basic header, as the endpoint will see them.
pub(crate) fn basic_credentials(id: &str, secret: &str, urlencode: bool) -> Zeroizing<String> {
    let joined = if urlencode {
        crate::wiped::concat(&[
            basic_urlencode(id).as_bytes(),
            b":",
            basic_urlencode(secret).as_bytes(),
        ])
    } else {
        crate::wiped::concat(&[id.as_bytes(), b":", secret.as_bytes()])
    };
    Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(joined.as_slice()))
}
