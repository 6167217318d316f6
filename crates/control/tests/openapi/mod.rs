//! The OpenAPI document as the API tests read it, and a validator for
//! the subset of JSON Schema (2020-12) its schemas use: `type` (one name
//! or several, so `["string", "null"]` is nullable), `required`,
//! `properties`, `additionalProperties` (a boolean or a schema), `enum`,
//! `items`, `minimum`, `maximum` and local `$ref`s. Any other keyword is
//! reported as an error rather than skipped, so no part of a body goes
//! unchecked by accident.

use serde_json::{json, Value};

use alcazar_control::api::http::ClientResponse;
use alcazar_control::api::routes::OPENAPI;

/// The schema keywords the validator checks.
pub const CHECKED: &[&str] = &[
    "$ref",
    "type",
    "required",
    "properties",
    "additionalProperties",
    "enum",
    "items",
    "minimum",
    "maximum",
];
/// Keywords that only annotate.
pub const ANNOTATIONS: &[&str] = &["description", "title", "default", "examples", "format"];

/// `docs/api/openapi.json`, as the server embeds it.
pub struct Doc {
    /// The parsed document.
    pub root: Value,
}

impl Doc {
    /// Parses the embedded document.
    pub fn load() -> Doc {
        Doc {
            root: serde_json::from_str(OPENAPI).expect("docs/api/openapi.json is JSON"),
        }
    }

    /// The value a local `$ref` (`#/components/...`) points to.
    pub fn pointer(&self, reference: &str) -> Option<&Value> {
        self.root.pointer(reference.strip_prefix('#')?)
    }

    /// `v`, with `$ref`s followed (responses, parameters).
    pub fn deref<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        for _ in 0..16 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    v = self
                        .pointer(r)
                        .unwrap_or_else(|| panic!("dangling $ref {r}"))
                }
                None => return v,
            }
        }
        panic!("a $ref cycle")
    }

    /// Validates `instance` against `schema`; the errors say where.
    pub fn validate(&self, schema: &Value, instance: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(schema) = schema.as_object() else {
            match schema {
                Value::Bool(true) => {}
                Value::Bool(false) => errors.push(format!("{at}: nothing is allowed here")),
                other => errors.push(format!("{at}: the schema {other} is not a schema")),
            }
            return;
        };
        for key in schema.keys() {
            if !CHECKED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                errors.push(format!("{at}: the validator does not know keyword {key:?}"));
            }
        }
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match self.pointer(r) {
                Some(target) => self.validate(target, instance, at, errors),
                None => errors.push(format!("{at}: dangling $ref {r}")),
            }
        }
        if let Some(types) = schema.get("type") {
            let names: Vec<&str> = match types {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !names.iter().any(|t| has_type(instance, t)) {
                errors.push(format!("{at}: {instance} is not of type {types}"));
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(instance) {
                errors.push(format!("{at}: {instance} is not one of {allowed:?}"));
            }
        }
        if let Some(n) = instance.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if n < min {
                    errors.push(format!("{at}: {n} is below the minimum {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if n > max {
                    errors.push(format!("{at}: {n} is above the maximum {max}"));
                }
            }
        }
        if let Some(object) = instance.as_object() {
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !object.contains_key(name) {
                        errors.push(format!("{at}: the member {name:?} is missing"));
                    }
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (name, value) in object {
                let here = format!("{at}/{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(sub) => self.validate(sub, value, &here, errors),
                    None => {
                        if let Some(extra) = schema.get("additionalProperties") {
                            self.validate(extra, value, &here, errors);
                        }
                    }
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), instance.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.validate(items, item, &format!("{at}/{i}"), errors);
            }
        }
    }

    /// Validates `instance` against `schema`, panicking with the errors.
    pub fn assert_valid(&self, schema: &Value, instance: &Value, what: &str) {
        let mut errors = Vec::new();
        self.validate(schema, instance, "", &mut errors);
        assert!(
            errors.is_empty(),
            "{what}: {instance} does not validate:\n  {}",
            errors.join("\n  ")
        );
    }

    /// The operations: (METHOD, path template, operation object).
    pub fn operations(&self) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        let paths = self.root["paths"].as_object().expect("paths is an object");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item is an object") {
                if HTTP_METHODS.contains(&method.as_str()) {
                    out.push((method.to_ascii_uppercase(), path.clone(), op));
                }
            }
        }
        out
    }

    /// The path template of the document that `path` matches. A `{name}`
    /// as the last segment takes one or more segments (the inspector
    /// path spans several).
    pub fn template_for(&self, path: &str) -> Option<String> {
        let path = path.trim_end_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.root["paths"].as_object()?;
        // Literal templates first: `/v1/vm/inspect` is not `{path}`.
        let mut templates: Vec<&String> = paths.keys().collect();
        templates.sort_by_key(|t| t.contains('{'));
        templates
            .into_iter()
            .find(|t| {
                let parts: Vec<&str> = t.split('/').collect();
                let last = parts.len() - 1;
                parts.iter().enumerate().all(|(i, p)| {
                    if p.starts_with('{') && i == last {
                        segments.len() > last && segments[last..].iter().all(|s| !s.is_empty())
                    } else {
                        segments.get(i) == Some(p) && (i < last || segments.len() == parts.len())
                    }
                })
            })
            .cloned()
    }

    /// Checks `response` against what the document declares for
    /// `method` on `template`; returns the JSON body (or `Null`).
    pub fn check(&self, method: &str, template: &str, response: &ClientResponse) -> Value {
        let op = &self.root["paths"][template][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let status = response.status.to_string();
        let declared = op["responses"].get(&status).unwrap_or_else(|| {
            panic!(
                "{method} {template} answered {status}, which the document does not declare: {}",
                String::from_utf8_lossy(&response.body)
            )
        });
        self.check_response(&format!("{method} {template} {status}"), declared, response)
    }

    /// Checks `response` against the response object `declared`.
    pub fn check_response(&self, what: &str, declared: &Value, response: &ClientResponse) -> Value {
        let declared = self.deref(declared);
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if response.status == 204 {
            assert!(
                header("content-length").is_none(),
                "{what}: a 204 with a Content-Length (RFC 9110 section 8.6)"
            );
        }
        if let Some(headers) = declared.get("headers").and_then(Value::as_object) {
            for (name, spec) in headers {
                let value = header(&name.to_ascii_lowercase())
                    .unwrap_or_else(|| panic!("{what}: no {name} header"));
                self.assert_valid(&spec["schema"], &json!(value), &format!("{what} {name}"));
            }
        }
        let Some(content) = declared.get("content").and_then(Value::as_object) else {
            if response.status != 101 {
                assert!(
                    response.body.is_empty(),
                    "{what}: a body where the document declares none: {}",
                    String::from_utf8_lossy(&response.body)
                );
            }
            return Value::Null;
        };
        let content_type = header("content-type").unwrap_or_else(|| panic!("{what}: no type"));
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let media = content
            .get(&essence)
            .unwrap_or_else(|| panic!("{what}: Content-Type {content_type} is not declared"));
        let body = if essence == "application/json" {
            serde_json::from_slice(&response.body)
                .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e})"))
        } else {
            Value::String(
                String::from_utf8(response.body.clone())
                    .unwrap_or_else(|_| panic!("{what}: the text body is not UTF-8")),
            )
        };
        self.assert_valid(&media["schema"], &body, what);
        body
    }
}

/// The methods a path item can hold operations for.
pub const HTTP_METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch"];

/// Whether `v` is of JSON Schema type `t`.
pub fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

/// Every `$ref` in `v`, with where it is.
pub fn refs(v: &Value, at: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, sub) in map {
                if k == "$ref" {
                    if let Some(r) = sub.as_str() {
                        out.push((at.clone(), r.to_string()));
                    }
                } else {
                    refs(sub, format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, sub) in items.iter().enumerate() {
                refs(sub, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Reports the keywords of `schema` (and its subschemas) the validator
/// does not know.
pub fn keywords_known(schema: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    for (k, v) in map {
        if !CHECKED.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
            errors.push(format!("{at}: unknown keyword {k}"));
        }
        match k.as_str() {
            "properties" => {
                for (p, sub) in v.as_object().into_iter().flatten() {
                    keywords_known(sub, &format!("{at}/{p}"), errors);
                }
            }
            "items" | "additionalProperties" => keywords_known(v, &format!("{at}/{k}"), errors),
            _ => {}
        }
    }
}
