//! How tidemark authenticates to an upstream.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::de::{error_at, nested, take_str};
use super::names::{HeaderName, HttpUrl, ParamName};
use super::secret::Secret;

/// Upstream authentication, tagged by `type`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Bearer),
    /// `Authorization: Basic ...`.
    Basic(Basic),
    /// An API key in a header.
    Header(ApiKey),
    /// An API key in a query parameter.
    Query(QueryKey),
    /// OAuth 2.0 (client credentials or refresh token grant); the access token is cached
    /// and refreshed when it expires or a request gets a 401.
    Oauth2(OAuth2),
}

impl<'de> Deserialize<'de> for Auth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let kind = take_str(&mut map, "type")?;
        let rest = Value::Object(map);
        Ok(match kind.as_str() {
            "none" => {
                nested::<NoAuth, _>(rest)?;
                Auth::None
            }
            "bearer" => Auth::Bearer(nested(rest)?),
            "basic" => Auth::Basic(nested(rest)?),
            "header" => Auth::Header(nested(rest)?),
            "query" => Auth::Query(nested(rest)?),
            "oauth2" => {
                let oauth: OAuth2 = nested(rest)?;
                if oauth.grant == Grant::RefreshToken && oauth.refresh_token.is_none() {
                    return Err(error_at(
                        "/refresh_token",
                        "the refresh_token grant needs a `refresh_token`",
                    ));
                }
                if oauth.grant == Grant::ClientCredentials && oauth.client_secret.is_none() {
                    return Err(error_at(
                        "/client_secret",
                        "the client_credentials grant needs a `client_secret`",
                    ));
                }
                Auth::Oauth2(oauth)
            }
            other => {
                return Err(error_at(
                    "/type",
                    format!(
                        "unknown auth type `{other}`: expected none, bearer, basic, header, query or oauth2"
                    ),
                ));
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoAuth {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Bearer {
    pub token: Secret,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Basic {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The header that carries the key.
    #[schema(value_type = String, example = "X-Api-Key")]
    pub name: HeaderName,
    pub value: Secret,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryKey {
    /// The query parameter that carries the key.
    #[schema(value_type = String, example = "api_key")]
    pub name: ParamName,
    pub value: Secret,
}

/// The OAuth 2.0 grant used to get access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    ClientCredentials,
    RefreshToken,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2 {
    /// The token endpoint.
    #[schema(value_type = String, example = "https://auth.example.com/oauth/token")]
    pub token_url: HttpUrl,
    pub grant: Grant,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// Required with the `refresh_token` grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}
