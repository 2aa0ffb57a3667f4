//! The OpenAPI document a process serves: what its mounted routes say of themselves, tagged
//! and described by the modules that own them.

use axum::{body::Bytes, http::header, response::IntoResponse};
use banyan_kit::auth;
use utoipa::openapi::{
    ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder,
    tag::{Tag, TagBuilder},
};

/// Where the OpenAPI document of the routes this process serves is served.
pub(crate) const OPENAPI_PATH: &str = "/api-docs/openapi.json";

/// The tag of the app's own operations.
pub(crate) const OPERATIONS_TAG: &str = "operations";

/// What each tag of the document holds: a module's operations (tagged with its name), or the
/// app's own.
/// The tags of the document: one per module hosted here, named after it and described by
/// it, then the app's own.
pub(crate) fn document_tags(
    hosted: impl IntoIterator<Item = (&'static str, &'static str)>,
) -> Vec<Tag> {
    hosted
        .into_iter()
        .chain([(
            OPERATIONS_TAG,
            "Liveness, readiness and the dead letters of the bus.",
        )])
        .map(|(name, description)| {
            TagBuilder::new()
                .name(name)
                .description(Some(description))
                .build()
        })
        .collect()
}

/// Tags every operation of a module's document with the module's name: modules do not write
/// their name on each route.
pub(crate) fn tag_operations(document: &mut OpenApi, module: &str) {
    for item in document.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            operation.tags = Some(vec![module.to_owned()]);
        }
    }
}

/// What the document says before any route is added: title, version and the `bearer`
/// security scheme that protected operations name.
pub(crate) fn document_base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Banyan")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "An e-commerce backend: a modular monolith whose modules each serve their \
                     part of this API. Errors are always JSON (`ErrorBody`) with a stable \
                     `error.code`. Any request may also be answered 504 (`timeout`) when it \
                     outlasts the server's request timeout, 413 when its body is too large, and \
                     an unknown route or method 404 / 405. Every response carries \
                     `x-request-id`.",
                ))
                .build(),
        )
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(auth::BEARER_SCHEME, auth::bearer_security_scheme())
                .build(),
        ))
        .build()
}

/// Merging keeps the first schema of a name and drops the other: two different schemas of one
/// name (two modules' `LineView`s, say) would leave one module's document wrong. Refused.
pub(crate) fn check_schema_names(
    so_far: &OpenApi,
    added: &OpenApi,
    by: &str,
) -> anyhow::Result<()> {
    let (Some(so_far), Some(added)) = (&so_far.components, &added.components) else {
        return Ok(());
    };
    for (name, schema) in &added.schemas {
        if so_far
            .schemas
            .get(name)
            .is_some_and(|existing| existing != schema)
        {
            anyhow::bail!(
                "the OpenAPI schema {name} of {by} differs from another of the same name; \
                 rename one of them"
            );
        }
    }
    Ok(())
}

/// `GET /api-docs/openapi.json`: the document, serialized once at start.
pub(crate) async fn serve_document(document: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document)
}

/// Where the API browser is served: Swagger UI, its files compiled into the binary (from the
/// `utoipa-swagger-ui-vendored` crate), reading [`OPENAPI_PATH`]. Nothing is fetched from
/// elsewhere: the online validator's badge is off.
pub(crate) const DOCS_PATH: &str = "/docs";

/// The API browser's routes: `/docs` (sent on to `/docs/`, where its relative links resolve)
/// and its files under `/docs/`.
pub(crate) fn docs_routes() -> axum::Router {
    let config = std::sync::Arc::new(
        utoipa_swagger_ui::Config::from(OPENAPI_PATH)
            .validator_url("none")
            .try_it_out_enabled(true)
            .persist_authorization(true)
            .display_request_duration(true),
    );
    let file = move |path: String| {
        let config = config.clone();
        async move {
            match utoipa_swagger_ui::serve(&path, config) {
                Ok(Some(file)) => (
                    [(header::CONTENT_TYPE, file.content_type)],
                    file.bytes.into_owned(),
                )
                    .into_response(),
                Ok(None) => banyan_kit::ApiError::not_found("no such file of the API browser")
                    .into_response(),
                Err(error) => banyan_kit::ApiError::internal(error.to_string()).into_response(),
            }
        }
    };
    let index = file.clone();
    axum::Router::new()
        .route(
            DOCS_PATH,
            axum::routing::get(|| async { axum::response::Redirect::permanent("/docs/") }),
        )
        .route("/docs/", axum::routing::get(move || index(String::new())))
        .route(
            "/docs/{*file}",
            axum::routing::get(
                move |axum::extract::Path(path): axum::extract::Path<String>| file(path),
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::all_modules;

    #[test]
    fn the_document_names_every_module_and_the_bearer_scheme() {
        let described: Vec<(&str, &str)> = all_modules()
            .iter()
            .map(|m| (m.name(), m.description()))
            .collect();
        let modules: Vec<&str> = described.iter().map(|(name, _)| *name).collect();
        let tags = document_tags(described.iter().copied());
        assert_eq!(tags.len(), modules.len() + 1);
        for (tag, name) in tags.iter().zip(modules.iter().chain([&OPERATIONS_TAG])) {
            assert_eq!(tag.name, *name);
            assert!(tag.description.is_some(), "{name} has no description");
        }
        let components = document_base().components.expect("components");
        assert!(
            components
                .security_schemes
                .contains_key(auth::BEARER_SCHEME)
        );
    }
}
