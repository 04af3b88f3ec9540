//! The OpenAPI document's links: every one names an operation that exists
//! by a unique operation id, passes parameters that operation takes, and
//! reads them from a field the source response has; the links stateful
//! fuzzers need are there.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

fn doc() -> Value {
    hangar_server::openapi_json()
}

/// `(path, method) -> operation` for every operation.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                out.insert((path.clone(), method.clone()), op.clone());
            }
        }
    }
    out
}

/// Follows a `$ref` into `components`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Whether the JSON pointer of `$response.body#/…` names a field of the
/// response's schema (array elements through `items`).
fn pointer_fits(doc: &Value, response: &Value, pointer: &str) -> bool {
    let mut schema = resolve(doc, &response["content"]["application/json"]["schema"]);
    for part in pointer.trim_start_matches('/').split('/') {
        schema = if part.parse::<usize>().is_ok() {
            resolve(doc, &schema["items"])
        } else {
            resolve(doc, &schema["properties"][part])
        };
        if schema.is_null() {
            return false;
        }
    }
    true
}

#[test]
fn operation_ids_are_unique() {
    let doc = doc();
    let mut seen: HashMap<String, (String, String)> = HashMap::new();
    for ((path, method), op) in operations(&doc) {
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"))
            .to_owned();
        if let Some(other) = seen.insert(id.clone(), (path.clone(), method.clone())) {
            panic!("operationId {id} is both {other:?} and {method} {path}");
        }
    }
}

#[test]
fn every_link_names_a_real_operation_parameter_and_field() {
    let doc = doc();
    let ops = operations(&doc);
    let by_id: HashMap<&str, &Value> = ops
        .values()
        .map(|op| (op["operationId"].as_str().unwrap(), op))
        .collect();
    let mut links = 0;
    for ((path, method), op) in &ops {
        for (status, response) in op["responses"].as_object().unwrap() {
            let Some(map) = response["links"].as_object() else {
                continue;
            };
            for (name, link) in map {
                links += 1;
                let target_id = link["operationId"].as_str().unwrap();
                let target = by_id.get(target_id).unwrap_or_else(|| {
                    panic!("{method} {path} {status} link {name}: no operation {target_id}")
                });
                let params: Vec<&str> = target["parameters"]
                    .as_array()
                    .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                    .unwrap_or_default();
                for (param, expr) in link["parameters"].as_object().unwrap() {
                    assert!(
                        params.contains(&param.as_str()),
                        "{method} {path} link {name}: {target_id} takes no parameter {param} ({params:?})"
                    );
                    let pointer = expr
                        .as_str()
                        .and_then(|e| e.strip_prefix("$response.body#"))
                        .unwrap_or_else(|| panic!("link {name}: expression {expr}"));
                    assert!(
                        pointer_fits(&doc, response, pointer),
                        "{method} {path} {status} link {name}: the response has no {pointer}"
                    );
                }
            }
        }
    }
    assert!(links >= 30, "only {links} links");
}

#[test]
fn creates_lead_to_their_objects_and_lists_to_their_items() {
    let doc = doc();
    let ops = operations(&doc);
    let op_id = |path: &str, method: &str| {
        ops[&(path.to_owned(), method.to_owned())]["operationId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let link = |path: &str, method: &str, status: &str, name: &str| {
        ops[&(path.to_owned(), method.to_owned())]["responses"][status]["links"][name].clone()
    };
    for kind in ["repositories", "organizations", "enterprises"] {
        let collection = format!("/api/v1/{kind}");
        let item = format!("/api/v1/{kind}/{{id}}");
        for (name, method) in [("get", "get"), ("update", "put"), ("delete", "delete")] {
            let l = link(&collection, "post", "201", name);
            assert_eq!(l["operationId"], op_id(&item, method), "{kind} {name}");
            assert_eq!(l["parameters"]["id"], "$response.body#/id");
        }
        let pools = format!("/api/v1/{kind}/{{id}}/pools");
        let l = link(&collection, "post", "201", "create_pool");
        assert_eq!(l["operationId"], op_id(&pools, "post"));
        let l = link(&pools, "post", "201", "get_pool");
        assert_eq!(l["operationId"], op_id("/api/v1/pools/{id}", "get"));
        assert_eq!(l["parameters"]["id"], "$response.body#/id");
    }
    let l = link("/api/v1/instances", "get", "200", "get_first_instance");
    assert_eq!(l["operationId"], op_id("/api/v1/instances/{name}", "get"));
    assert_eq!(l["parameters"]["name"], "$response.body#/0/name");
    let l = link("/api/v1/endpoints", "post", "201", "delete");
    assert_eq!(
        l["operationId"],
        op_id("/api/v1/endpoints/{name}", "delete")
    );
}
