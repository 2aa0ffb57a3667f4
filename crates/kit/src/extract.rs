//! Extractors whose every rejection is a JSON [`ApiError`], never axum's plain-text default.

use axum::{
    extract::{
        FromRequest, FromRequestParts,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use banyan_bus::Context;

use crate::ApiError;

/// A JSON body. Malformed JSON is a 400, a body of the wrong shape (unknown, missing or
/// mistyped fields) a 422, a missing content type a 415, an oversized body a 413.
///
/// JSON has one kind of number, and to JSON Schema (so to the API document) `2.0` is the
/// integer 2: a body refused as it is is tried once more with its whole-valued fractions
/// made integers, so an integer field takes `2.0` and still refuses `2.5`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        // axum's own extractor checks the content type, the size and the syntax; the raw value
        // is the body's text, checked but not built into a tree.
        let axum::Json(raw) =
            axum::Json::<Box<serde_json::value::RawValue>>::from_request(request, state).await?;
        let mut text = serde_json::Deserializer::from_str(raw.get());
        let refused = match serde_path_to_error::deserialize::<_, T>(&mut text) {
            Ok(body) => return Ok(Json(body)),
            Err(refused) => refused,
        };
        // Only a refused body pays for the second try.
        if let Ok(mut whole) = serde_json::from_str::<serde_json::Value>(raw.get())
            && integral_numbers_as_integers(&mut whole)
            && let Ok(body) = serde_json::from_value(whole)
        {
            return Ok(Json(body));
        }
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("Failed to deserialize the JSON body into the target type: {refused}"),
        ))
    }
}

/// For an optional field of a body that may be left out but not sent as `null` (the document
/// says it is not nullable): `#[serde(default, deserialize_with = "banyan_kit::extract::present")]`.
/// Absent, `default` makes it `None`; given, it must be a value of its type.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Makes every whole-valued number with a fraction part (`2.0`) an integer, in place;
/// whether any was.
fn integral_numbers_as_integers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(number) if number.is_f64() => {
            let float = number.as_f64().unwrap_or(f64::NAN);
            // Within ±2^53 a float holds its integer exactly.
            if float.fract() == 0.0 && float.abs() <= 9_007_199_254_740_992.0 {
                *value = Value::from(float as i64);
                true
            } else {
                false
            }
        }
        // Every element is visited (no short cut once one changed).
        Value::Array(items) => {
            items
                .iter_mut()
                .map(integral_numbers_as_integers)
                .filter(|changed| *changed)
                .count()
                > 0
        }
        Value::Object(fields) => {
            fields
                .values_mut()
                .map(integral_numbers_as_integers)
                .filter(|changed| *changed)
                .count()
                > 0
        }
        _ => false,
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => "validation_failed",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            _ => "bad_request",
        };
        ApiError::new(rejection.status(), code, rejection.body_text())
    }
}

/// Path parameters; one that does not parse (an id that is no UUID) is a 400.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}

/// Query parameters; unknown or unparsable ones are a 400.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

/// The causal context of this HTTP request: its correlation id (from `x-request-id`) and
/// trace context (from `traceparent`), put in the request by the app's middleware.
#[derive(Debug, Clone)]
pub struct Cx(pub Context);

impl<S: Send + Sync> FromRequestParts<S> for Cx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Cx(parts
            .extensions
            .get::<Context>()
            .cloned()
            .unwrap_or_else(Context::root)))
    }
}

impl std::ops::Deref for Cx {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.0
    }
}

/// The client's address as the edge established it: the connection's peer, or the address a
/// trusted proxy put in `X-Forwarded-For` (`[gateway] trusted_proxies`), never a header an
/// untrusted peer wrote. The edge puts it in the request's extensions; `None` where no edge
/// ran (a module's router under test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Self>()
            .copied()
            .unwrap_or(Self(None)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::{body::Body, extract::FromRequest, http::Request};
    use serde::Deserialize;

    use super::Json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Stock {
        on_hand: i64,
        rate: Option<f64>,
    }

    async fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, crate::ApiError> {
        let request = Request::post("/")
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        Json::<T>::from_request(request, &()).await.map(|Json(t)| t)
    }

    #[tokio::test]
    async fn a_whole_number_written_with_a_fraction_is_an_integer_and_a_fraction_is_not() {
        let stock: Stock = parse(r#"{"on_hand": 5.0, "rate": 0.5}"#).await.unwrap();
        assert_eq!(
            stock,
            Stock {
                on_hand: 5,
                rate: Some(0.5)
            }
        );
        assert_eq!(
            parse::<Stock>(r#"{"on_hand": 7}"#).await.unwrap().on_hand,
            7
        );
        for bad in [
            r#"{"on_hand": 5.5}"#,
            r#"{"on_hand": "5"}"#,
            r#"{"on_hand": 1, "x": 1}"#,
        ] {
            let refused = parse::<Stock>(bad).await.unwrap_err();
            assert_eq!(
                refused.status,
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "{bad}"
            );
            assert!(
                refused.message.contains("on_hand") || refused.message.contains('x'),
                "{}",
                refused.message
            );
        }
        let malformed = parse::<Stock>("{").await.unwrap_err();
        assert_eq!(malformed.status, axum::http::StatusCode::BAD_REQUEST);
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Change {
        #[serde(default, deserialize_with = "super::present")]
        name: Option<String>,
    }

    #[tokio::test]
    async fn a_field_that_may_be_left_out_may_not_be_null() {
        assert_eq!(parse::<Change>("{}").await.unwrap(), Change { name: None });
        assert_eq!(
            parse::<Change>(r#"{"name": "Teapot"}"#).await.unwrap(),
            Change {
                name: Some("Teapot".into())
            }
        );
        let refused = parse::<Change>(r#"{"name": null}"#).await.unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
    }
}
