//! SASL responses of `connection.start-ok` for the two mechanisms the broker offers.
//!
//! - PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`. The authorization identity is
//!   ignored, as RabbitMQ does; the user is the authentication identity.
//! - AMQPLAIN (RabbitMQ and the original 0-8 spec): a field table *without* its length prefix,
//!   holding `LOGIN` and `PASSWORD`.
//!
//! Checking the password is not done here: this only extracts credentials.

use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable};

use super::error::WireError;
use super::nesting;

/// The credentials a client presented.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    pub username: String,
    pub password: String,
}

// Hand-written so that a password never reaches a log line through `{:?}`.
impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Extracts credentials for `mechanism` (as named in `connection.start-ok`).
pub fn parse_sasl_response(mechanism: &str, response: &[u8]) -> Result<SaslCredentials, WireError> {
    match mechanism {
        "PLAIN" => parse_plain(response),
        "AMQPLAIN" => parse_amqplain(response),
        other => Err(WireError::UnknownMechanism {
            mechanism: other.to_owned(),
        }),
    }
}

/// PLAIN: `[authzid] \0 user \0 password`.
pub fn parse_plain(response: &[u8]) -> Result<SaslCredentials, WireError> {
    let bad = |reason| WireError::BadSaslResponse {
        mechanism: "PLAIN",
        reason,
    };
    let mut parts = response.split(|&b| b == 0);
    let (Some(_authzid), Some(user), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected exactly two NUL separators"));
    };
    if user.is_empty() {
        return Err(bad("empty user name"));
    }
    Ok(SaslCredentials {
        username: utf8(user).ok_or_else(|| bad("user name is not UTF-8"))?,
        password: utf8(pass).ok_or_else(|| bad("password is not UTF-8"))?,
    })
}

/// AMQPLAIN: table entries `LOGIN` and `PASSWORD` (long or short strings), no length prefix.
pub fn parse_amqplain(response: &[u8]) -> Result<SaslCredentials, WireError> {
    let bad = |reason| WireError::BadSaslResponse {
        mechanism: "AMQPLAIN",
        reason,
    };
    nesting::check_table_body(response).map_err(|_| bad("field table nested too deep"))?;
    let len = u32::try_from(response.len()).map_err(|_| bad("response too long"))?;
    let mut framed = Vec::with_capacity(response.len() + 4);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(response);
    let table: FieldTable = match parse_field_table(framed.as_slice()) {
        Ok(([], table)) => table,
        _ => return Err(bad("not a field table")),
    };
    let field = |name: &str| -> Option<String> {
        match table.inner().get(name)? {
            AMQPValue::LongString(s) => utf8(s.as_bytes()),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    };
    let username = field("LOGIN").ok_or_else(|| bad("no LOGIN string"))?;
    let password = field("PASSWORD").ok_or_else(|| bad("no PASSWORD string"))?;
    if username.is_empty() {
        return Err(bad("empty user name"));
    }
    Ok(SaslCredentials { username, password })
}

fn utf8(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::auth::{Credentials, SASLMechanism};

    #[test]
    fn plain_response_yields_user_and_password() {
        let creds = parse_plain(b"\0guest\0s3cret").unwrap();
        assert_eq!(creds.username, "guest");
        assert_eq!(creds.password, "s3cret");
    }

    #[test]
    fn plain_authorization_identity_is_ignored() {
        let creds = parse_plain(b"admin\0guest\0pw").unwrap();
        assert_eq!(creds.username, "guest");
    }

    #[test]
    fn plain_password_may_be_empty() {
        assert_eq!(parse_plain(b"\0guest\0").unwrap().password, "");
    }

    #[test]
    fn plain_without_separators_is_refused_with_access_refused() {
        let err = parse_plain(b"guestguest").unwrap_err();
        assert_eq!(err.reply_code().code(), 403);
    }

    #[test]
    fn plain_with_a_third_separator_is_refused() {
        assert!(parse_plain(b"\0a\0b\0c").is_err());
    }

    #[test]
    fn plain_with_an_empty_user_is_refused() {
        assert!(parse_plain(b"\0\0pw").is_err());
    }

    #[test]
    fn amqplain_response_from_amq_protocol_client_is_understood() {
        // lapin's (amq-protocol's) client-side encoding of AMQPLAIN.
        let response = Credentials::new("guest".into(), "pa55".into())
            .sasl_auth_string(SASLMechanism::AMQPlain);
        let creds = parse_amqplain(response.as_bytes()).unwrap();
        assert_eq!(creds.username, "guest");
        assert_eq!(creds.password, "pa55");
    }

    #[test]
    fn amqplain_bytes_derived_from_the_spec_are_understood() {
        // key "LOGIN", type 'S', long string "bob"; key "PASSWORD", type 'S', "pw".
        let mut bytes = vec![5];
        bytes.extend_from_slice(b"LOGINS\0\0\0\x03bob");
        bytes.push(8);
        bytes.extend_from_slice(b"PASSWORDS\0\0\0\x02pw");
        let creds = parse_amqplain(&bytes).unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("bob", "pw")
        );
    }

    #[test]
    fn amqplain_without_password_is_refused() {
        let mut bytes = vec![5];
        bytes.extend_from_slice(b"LOGINS\0\0\0\x03bob");
        assert!(parse_amqplain(&bytes).is_err());
    }

    #[test]
    fn amqplain_garbage_is_refused_without_panicking() {
        assert!(parse_amqplain(b"\xff\xff\xff").is_err());
    }

    #[test]
    fn unknown_mechanism_is_a_command_invalid() {
        let err = parse_sasl_response("EXTERNAL", b"").unwrap_err();
        assert_eq!(err.reply_code().code(), 503);
    }

    #[test]
    fn credentials_debug_output_hides_the_password() {
        let creds = parse_plain(b"\0guest\0topsecret").unwrap();
        assert!(!format!("{creds:?}").contains("topsecret"));
    }
}
