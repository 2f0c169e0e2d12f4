//! Small validated string types: a value of one of these types is valid by construction.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Defines a `String` newtype that is checked by `$check` when it is deserialized.
macro_rules! checked_string {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
        $(#[$meta])*
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

const MAX_NAME_LEN: usize = 64;

fn slug(value: &str) -> Result<(), String> {
    let mut chars = value.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && value.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a valid name: use 1 to {MAX_NAME_LEN} characters of [a-z0-9_-], starting with a letter or digit"
        ))
    }
}

checked_string!(
    /// A source's unique name: a slug matching `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", example = "shop")]
    SourceName,
    slug
);

checked_string!(
    /// A stream's name, unique within its source: a slug like a source name.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", example = "products")]
    StreamName,
    slug
);

checked_string!(
    /// A feed consumer's name (`consumer=`, docs/design.md §5): a slug like a source name.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", example = "billing")]
    ConsumerName,
    slug
);

checked_string!(
    /// A JSON pointer (RFC 6901): `""` for the whole document, otherwise `/`-separated
    /// reference tokens such as `/data/items`.
    #[schema(example = "/id")]
    JsonPointer,
    |value| {
        if !value.is_empty() && !value.starts_with('/') {
            return Err(format!("`{value}` is not a JSON pointer: it must be empty or start with `/`"));
        }
        // `~` must be followed by 0 or 1 (RFC 6901 §3).
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!("`{value}` is not a JSON pointer: `~` must be followed by 0 or 1"));
            }
        }
        Ok(())
    }
);

checked_string!(
    /// The name of an environment variable of the tidemark process.
    #[schema(pattern = "^[A-Za-z_][A-Za-z0-9_]*$", example = "SHOP_TOKEN")]
    EnvName,
    |value| {
        let mut chars = value.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(())
        } else {
            Err(format!("`{value}` is not an environment variable name"))
        }
    }
);

checked_string!(
    /// An HTTP header name.
    #[schema(example = "X-Api-Key")]
    HeaderName,
    |value| {
        axum::http::HeaderName::from_bytes(value.as_bytes())
            .map(|_| ())
            .map_err(|_| format!("`{value}` is not a valid HTTP header name"))
    }
);

checked_string!(
    /// An HTTP header value (visible ASCII and spaces).
    HeaderValue,
    |value| {
        axum::http::HeaderValue::from_str(value)
            .map(|_| ())
            .map_err(|_| "not a valid HTTP header value".to_owned())
    }
);

checked_string!(
    /// An absolute path on the source's host, starting with `/`, without `?` or `#`
    /// (query parameters go in `query`).
    #[schema(example = "/admin/products.json")]
    RequestPath,
    |value| {
        if !value.starts_with('/') || value.contains(['?', '#']) || value.chars().any(char::is_whitespace) {
            Err(format!("`{value}` must start with `/` and contain no `?`, `#` or whitespace"))
        } else {
            Ok(())
        }
    }
);

checked_string!(
    /// The name of a query parameter or form field sent to the upstream.
    #[schema(example = "updated_since")]
    ParamName,
    |value| {
        if value.is_empty() || value.len() > 128 || value.chars().any(|c| c.is_control()) {
            Err("a parameter name must be 1 to 128 characters, without control characters".to_owned())
        } else {
            Ok(())
        }
    }
);

checked_string!(
    /// An absolute `http` or `https` URL.
    #[schema(example = "http://127.0.0.1:9000")]
    HttpUrl,
    |value| {
        let url = url::Url::parse(value).map_err(|e| format!("`{value}` is not an absolute URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("`{value}` must be an http or https URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "`{value}` must not carry a query, fragment or credentials: use `headers`, `auth` or a stream's `query`"
            ));
        }
        Ok(())
    }
);

checked_string!(
    /// A cron expression with seconds: `sec min hour day-of-month month day-of-week [year]`.
    #[schema(example = "0 */15 * * * *")]
    CronExpr,
    |value| {
        value
            .parse::<cron::Schedule>()
            .map(|_| ())
            .map_err(|e| format!("`{value}` is not a valid cron expression (6 or 7 fields, seconds first): {e}"))
    }
);

impl CronExpr {
    /// The parsed schedule (the text was checked when the value was made).
    pub fn schedule(&self) -> Option<cron::Schedule> {
        self.as_str().parse().ok()
    }
}

impl Default for JsonPointer {
    /// The whole document.
    fn default() -> Self {
        Self(String::new())
    }
}

/// Defines an integer newtype restricted to `$min..=$max`, checked when deserialized.
macro_rules! ranged {
    ($(#[$meta:meta])* $name:ident, $int:ty, $min:expr, $max:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "u64", into = "u64")]
        pub struct $name($int);

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer)
                    .minimum(Some($min))
                    .maximum(Some($max))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            pub const fn get(self) -> $int {
                self.0
            }
        }

        impl TryFrom<u64> for $name {
            type Error = String;
            fn try_from(value: u64) -> Result<Self, String> {
                if ($min..=$max).contains(&value) {
                    // In range, so the conversion cannot truncate.
                    Ok(Self(value as $int))
                } else {
                    Err(format!("{value} is out of range: must be {} to {}", $min, $max))
                }
            }
        }

        impl From<$name> for u64 {
            fn from(value: $name) -> u64 {
                value.0 as u64
            }
        }
    };
}
pub(crate) use ranged;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["shop", "a", "0x", "my_shop-2"] {
            assert!(SourceName::try_from(ok.to_owned()).is_ok(), "{ok}");
        }
        for bad in ["", "Shop", "-a", "_a", "a b", "a/b", &"a".repeat(65)] {
            assert!(SourceName::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn pointers() {
        for ok in ["", "/", "/a/0", "/a~0b~1c"] {
            assert!(JsonPointer::try_from(ok.to_owned()).is_ok(), "{ok}");
        }
        for bad in ["a", "/a~2", "/a~"] {
            assert!(JsonPointer::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
