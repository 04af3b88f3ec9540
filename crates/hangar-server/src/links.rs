//! OpenAPI links between operations, so a stateful client (schemathesis'
//! stateful mode, code generators) learns that the `id` a create answers
//! is what the get, update and delete of that object take, and can chain
//! them. Added to the document the router's registration produced, with
//! operation ids made unique first (the handlers' names — `get`, `list` —
//! repeat across resources).

use std::collections::HashMap;

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::{OpenApi, RefOr};

/// Every operation of `doc`, with its path and method.
fn operations_mut(doc: &mut OpenApi) -> Vec<(String, HttpMethod, &mut Operation)> {
    let mut out = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Delete, &mut item.delete),
            (HttpMethod::Patch, &mut item.patch),
        ] {
            if let Some(op) = op.as_mut() {
                out.push((path.clone(), method, op));
            }
        }
    }
    out
}

fn method_name(m: &HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "get",
        HttpMethod::Put => "put",
        HttpMethod::Post => "post",
        HttpMethod::Delete => "delete",
        HttpMethod::Patch => "patch",
        _ => "other",
    }
}

/// The resource a path is about: its first segment after `/api/v1/`.
fn resource(path: &str) -> &str {
    let rest = path.strip_prefix("/api/v1/").unwrap_or(path);
    rest.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

/// Makes operation ids unique: a handler name used by several operations
/// gets its resource in front (`get` → `repositories_get`), and, if that
/// still repeats, its method too.
pub fn unique_operation_ids(doc: &mut OpenApi) {
    let mut ops = operations_mut(doc);
    let mut count: HashMap<String, usize> = HashMap::new();
    for (_, _, op) in &ops {
        if let Some(id) = &op.operation_id {
            *count.entry(id.clone()).or_default() += 1;
        }
    }
    let mut taken: HashMap<String, usize> = HashMap::new();
    for (path, method, op) in &mut ops {
        let Some(id) = op.operation_id.clone() else {
            continue;
        };
        if count[&id] > 1 {
            let mut new = format!("{}_{id}", resource(path));
            if taken.contains_key(&new) {
                new = format!("{}_{new}", method_name(method));
            }
            op.operation_id = Some(new);
        }
        *taken
            .entry(op.operation_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
}

/// One link: from a response of `(path, method, status)` to the operation
/// at `(target path, target method)`, passing `parameter` = `expression`.
struct Spec {
    from: (&'static str, HttpMethod, &'static str),
    name: &'static str,
    to: (&'static str, HttpMethod),
    parameter: &'static str,
    expression: &'static str,
}

fn specs() -> Vec<Spec> {
    use HttpMethod::{Delete, Get, Post, Put};
    let mut v = Vec::new();
    let by_id_after_create =
        |v: &mut Vec<Spec>, collection: &'static str, item: &'static str, param, expr| {
            for (name, method) in [("get", Get), ("update", Put), ("delete", Delete)] {
                v.push(Spec {
                    from: (collection, Post, "201"),
                    name,
                    to: (item, method),
                    parameter: param,
                    expression: expr,
                });
            }
        };
    by_id_after_create(
        &mut v,
        "/api/v1/endpoints",
        "/api/v1/endpoints/{name}",
        "name",
        "$response.body#/name",
    );
    by_id_after_create(
        &mut v,
        "/api/v1/credentials",
        "/api/v1/credentials/{name}",
        "name",
        "$response.body#/name",
    );
    for (collection, item, pools, scale_sets) in [
        (
            "/api/v1/repositories",
            "/api/v1/repositories/{id}",
            "/api/v1/repositories/{id}/pools",
            "/api/v1/repositories/{id}/scalesets",
        ),
        (
            "/api/v1/organizations",
            "/api/v1/organizations/{id}",
            "/api/v1/organizations/{id}/pools",
            "/api/v1/organizations/{id}/scalesets",
        ),
        (
            "/api/v1/enterprises",
            "/api/v1/enterprises/{id}",
            "/api/v1/enterprises/{id}/pools",
            "/api/v1/enterprises/{id}/scalesets",
        ),
    ] {
        for (name, method) in [("list_scale_sets", Get), ("create_scale_set", Post)] {
            v.push(Spec {
                from: (collection, Post, "201"),
                name,
                to: (scale_sets, method),
                parameter: "id",
                expression: "$response.body#/id",
            });
        }
        // A new scale set: its own routes.
        for (name, method) in [
            ("get_scale_set", Get),
            ("update_scale_set", Put),
            ("delete_scale_set", Delete),
        ] {
            v.push(Spec {
                from: (scale_sets, Post, "201"),
                name,
                to: ("/api/v1/scalesets/{id}", method),
                parameter: "id",
                expression: "$response.body#/id",
            });
        }
        by_id_after_create(&mut v, collection, item, "id", "$response.body#/id");
        for (name, method) in [("list_pools", Get), ("create_pool", Post)] {
            v.push(Spec {
                from: (collection, Post, "201"),
                name,
                to: (pools, method),
                parameter: "id",
                expression: "$response.body#/id",
            });
        }
        // A new pool: its own routes.
        for (name, to) in [
            ("get_pool", ("/api/v1/pools/{id}", Get)),
            ("update_pool", ("/api/v1/pools/{id}", Put)),
            ("delete_pool", ("/api/v1/pools/{id}", Delete)),
            ("list_pool_instances", ("/api/v1/pools/{id}/instances", Get)),
        ] {
            v.push(Spec {
                from: (pools, Post, "201"),
                name,
                to,
                parameter: "id",
                expression: "$response.body#/id",
            });
        }
    }
    // Lists: the first element's key leads to it.
    for (from, name, to, parameter, expression) in [
        (
            "/api/v1/pools",
            "get_first_pool",
            ("/api/v1/pools/{id}", Get),
            "id",
            "$response.body#/0/id",
        ),
        (
            "/api/v1/scalesets",
            "get_first_scale_set",
            ("/api/v1/scalesets/{id}", Get),
            "id",
            "$response.body#/0/id",
        ),
        (
            "/api/v1/instances",
            "get_first_instance",
            ("/api/v1/instances/{name}", Get),
            "name",
            "$response.body#/0/name",
        ),
        (
            "/api/v1/instances",
            "delete_first_instance",
            ("/api/v1/instances/{name}", Delete),
            "name",
            "$response.body#/0/name",
        ),
        (
            "/api/v1/pools/{id}/instances",
            "get_first_instance",
            ("/api/v1/instances/{name}", Get),
            "name",
            "$response.body#/0/name",
        ),
    ] {
        v.push(Spec {
            from: (from, Get, "200"),
            name,
            to,
            parameter,
            expression,
        });
    }
    v
}

fn operation<'a>(doc: &'a OpenApi, path: &str, method: &HttpMethod) -> Option<&'a Operation> {
    let item = doc.paths.paths.get(path)?;
    match method {
        HttpMethod::Get => item.get.as_ref(),
        HttpMethod::Put => item.put.as_ref(),
        HttpMethod::Post => item.post.as_ref(),
        HttpMethod::Delete => item.delete.as_ref(),
        HttpMethod::Patch => item.patch.as_ref(),
        _ => None,
    }
}

/// Adds the links of [`specs`] whose both ends are in `doc`, naming the
/// target by its (unique) operation id.
pub fn add_links(doc: &mut OpenApi) {
    let mut resolved = Vec::new();
    for s in specs() {
        let Some(target) = operation(doc, s.to.0, &s.to.1).and_then(|o| o.operation_id.clone())
        else {
            continue;
        };
        resolved.push((s, target));
    }
    for (s, target) in resolved {
        let (path, method, status) = s.from;
        let item = doc.paths.paths.get_mut(path);
        let op = item.and_then(|item| match method {
            HttpMethod::Get => item.get.as_mut(),
            HttpMethod::Put => item.put.as_mut(),
            HttpMethod::Post => item.post.as_mut(),
            HttpMethod::Delete => item.delete.as_mut(),
            _ => None,
        });
        let Some(op) = op else { continue };
        let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) else {
            continue;
        };
        response.links.insert(
            s.name.to_owned(),
            RefOr::T(
                LinkBuilder::new()
                    .operation_id(target)
                    .parameter(s.parameter, s.expression)
                    .build(),
            ),
        );
    }
}

/// utoipa 5 writes a link's fields in snake case (`operation_id`); the
/// OpenAPI 3 spec names them in camel case (`operationId`), which is what
/// clients read. Renames them in the document's JSON.
pub fn camel_case_link_fields(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|r| r.get_mut("links")?.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|l| l.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(v) = link.remove(snake) {
                link.insert(camel.to_owned(), v);
            }
        }
    }
}
