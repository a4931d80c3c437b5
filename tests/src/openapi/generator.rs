//! Walks the descriptor pool and builds the document's paths and schemas.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, ServiceDescriptor,
};
use serde_json::{Map, Value, json};

use super::comments::{Comments, first_sentence};
use super::constraints::{constrain, error_responses, output_only, required};
use super::links::links_from;
use super::{security_scheme, template_variables};

/// What the transcoder asks of a request object's keys: it skips a name
/// the message does not have, but refuses an empty one.
fn named() -> Value {
    json!({"minLength": 1})
}

pub(super) struct Generator {
    http: ExtensionDescriptor,
    pub(super) comments: Comments,
    /// OpenAPI path → method → operation.
    pub(super) paths: BTreeMap<String, Map<String, Value>>,
    /// Messages and enums the document refers to, by full name.
    referenced: BTreeSet<String>,
    /// Schemas of the generator's own making: the elements of repeated
    /// request fields.
    pub(super) own_schemas: BTreeMap<String, Value>,
    pool: DescriptorPool,
}

impl Generator {
    pub(super) fn new(pool: &DescriptorPool) -> Result<Self, String> {
        let http = pool
            .get_extension_by_name("google.api.http")
            .ok_or("google.api.http is not in the descriptor set")?;
        Ok(Self {
            http,
            comments: Comments::new(pool),
            paths: BTreeMap::new(),
            referenced: BTreeSet::new(),
            own_schemas: BTreeMap::new(),
            pool: pool.clone(),
        })
    }

    pub(super) fn add_method(
        &mut self,
        service: &ServiceDescriptor,
        method: &MethodDescriptor,
    ) -> Result<(), String> {
        let options = method.options();
        if !options.has_extension(&self.http) {
            return Err(format!(
                "{} has no google.api.http annotation: every public method needs one",
                method.full_name()
            ));
        }
        let rule = options.get_extension(&self.http);
        let rule = rule
            .as_message()
            .ok_or("google.api.http is not a message")?
            .clone();
        let bindings = rule
            .get_field_by_name("additional_bindings")
            .and_then(|list| list.as_list().map(<[_]>::to_vec))
            .unwrap_or_default();
        let mut rules = vec![rule];
        rules.extend(bindings.iter().filter_map(|b| b.as_message().cloned()));
        for (index, rule) in rules.iter().enumerate() {
            let text = |name: &str| {
                rule.get_field_by_name(name)
                    .and_then(|value| value.as_str().map(str::to_owned))
                    .unwrap_or_default()
            };
            let (verb, template) = ["get", "put", "post", "delete", "patch"]
                .into_iter()
                .find(|verb| rule.has_field_by_name(verb))
                .map(|verb| (verb.to_owned(), text(verb)))
                .ok_or_else(|| {
                    format!(
                        "{}: only get, put, post, delete and patch rules are supported",
                        method.full_name()
                    )
                })?;
            let mut operation_id = format!("{}_{}", service.name(), method.name());
            if index > 0 {
                operation_id.push_str(&format!("{}", index + 1));
            }
            let operation = self.operation(
                service,
                method,
                &operation_id,
                &template,
                &text("body"),
                &text("response_body"),
            )?;
            let (path, _) = template_variables(&template)?;
            let operations = self.paths.entry(path.clone()).or_default();
            if operations.insert(verb.clone(), operation).is_some() {
                return Err(format!("two methods bound to {verb} {path}"));
            }
        }
        Ok(())
    }

    fn operation(
        &mut self,
        service: &ServiceDescriptor,
        method: &MethodDescriptor,
        operation_id: &str,
        template: &str,
        body: &str,
        response_body: &str,
    ) -> Result<Value, String> {
        let input = method.input();
        let (_, variables) = template_variables(template)?;
        let description = self.comments.of(&method.parent_file(), method.path());

        let mut parameters = Vec::new();
        for variable in &variables {
            let field = resolve_field(&input, variable).ok_or_else(|| {
                format!(
                    "{}: path variable {variable} is no field of {}",
                    method.full_name(),
                    input.full_name()
                )
            })?;
            parameters.push(json!({
                "name": variable,
                "in": "path",
                "required": true,
                "description": self.field_description(&field),
                "schema": self.constrained_schema(&field),
            }));
        }
        if body != "*" {
            // Fields bound neither to the path nor to the body come from the
            // query string.
            let mut query = Vec::new();
            self.query_parameters(&input, "", &variables, body, &mut query, &mut Vec::new());
            parameters.extend(query);
        }

        let mut operation = Map::new();
        operation.insert("operationId".into(), json!(operation_id));
        operation.insert("summary".into(), json!(first_sentence(&description)));
        operation.insert("description".into(), json!(description));
        operation.insert("tags".into(), json!([service.name()]));
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(request_body) = self.request_body(method, &input, &variables, body)? {
            operation.insert("requestBody".into(), request_body);
        }

        let output = method.output();
        let mut response_schema = if response_body.is_empty() {
            self.message_ref(&output)
        } else {
            let field = output.get_field_by_name(response_body).ok_or_else(|| {
                format!("{}: no response field {response_body}", method.full_name())
            })?;
            self.field_schema(&field)
        };
        let mut success = String::from("The call succeeded.");
        if method.is_server_streaming() {
            response_schema = json!({"type": "array", "items": response_schema});
            success = String::from(
                "A JSON array streamed element by element, one per message of the gRPC stream; \
                 the response ends when the stream does.",
            );
        }
        let error_schema = json!({"$ref": "#/components/schemas/google.rpc.Status"});
        let scheme = security_scheme(service.name(), method.name())?;
        let mut responses = Map::new();
        let mut ok = json!({
            "description": success,
            "content": {"application/json": {"schema": response_schema}},
        });
        if let Some(links) = links_from(operation_id) {
            ok["links"] = links;
        }
        responses.insert("200".into(), ok);
        let credential = scheme.map(|scheme| match scheme {
            "apiKey" => "API key",
            "installToken" => "install token",
            _ => "admin token",
        });
        for (status, description) in error_responses(credential) {
            responses.insert(
                status.into(),
                json!({
                    "description": description,
                    "content": {"application/json": {"schema": error_schema}},
                }),
            );
        }
        responses.insert(
            "default".into(),
            json!({
                "description": "Any other failure: the gRPC status as JSON, with the HTTP status of its code.",
                "content": {"application/json": {"schema": error_schema}},
            }),
        );
        operation.insert("responses".into(), Value::Object(responses));
        let security = match scheme {
            Some(scheme) => json!([{ scheme: [] }]),
            None => json!([]),
        };
        operation.insert("security".into(), security);
        Ok(Value::Object(operation))
    }

    fn request_body(
        &mut self,
        method: &MethodDescriptor,
        input: &MessageDescriptor,
        variables: &[String],
        body: &str,
    ) -> Result<Option<Value>, String> {
        let (schema, description, required) = match body {
            "" => return Ok(None),
            "*" if variables.is_empty() => (
                self.message_ref(input),
                self.comments.of(&input.parent_file(), input.path()),
                // Without a body every field is left out: a body is
                // required when one of them is.
                !required(input.fields().collect::<Vec<_>>().iter()).is_empty(),
            ),
            "*" => {
                // The request message less the fields the path carries.
                let mut properties = Map::new();
                let in_body: Vec<FieldDescriptor> = input
                    .fields()
                    .filter(|field| !variables.iter().any(|v| v == field.name()))
                    .collect();
                for field in &in_body {
                    let schema = self.property_schema(field);
                    properties.insert(field.name().to_owned(), schema);
                }
                let required_fields = required(in_body.iter());
                let required = !required_fields.is_empty();
                let mut schema = json!({
                    "type": "object",
                    "properties": properties,
                    "propertyNames": named(),
                });
                if !required_fields.is_empty() {
                    schema["required"] = json!(required_fields);
                }
                (
                    schema,
                    self.comments.of(&input.parent_file(), input.path()),
                    required,
                )
            }
            field_name => {
                let field = input
                    .get_field_by_name(field_name)
                    .ok_or_else(|| format!("{}: no body field {field_name}", method.full_name()))?;
                let required = !required([&field].into_iter()).is_empty();
                let mut schema = self.constrained_schema(&field);
                if let Value::Object(object) = &mut schema
                    && !required
                {
                    // A `null` body leaves the field out.
                    allow_null(object);
                }
                (schema, self.field_description(&field), required)
            }
        };
        Ok(Some(json!({
            "description": description,
            "required": required,
            "content": {"application/json": {"schema": schema}},
        })))
    }

    fn query_parameters(
        &mut self,
        message: &MessageDescriptor,
        prefix: &str,
        variables: &[String],
        body: &str,
        out: &mut Vec<Value>,
        seen: &mut Vec<String>,
    ) {
        if seen.iter().any(|name| name == message.full_name()) {
            return;
        }
        seen.push(message.full_name().to_owned());
        for field in message.fields() {
            let name = format!("{prefix}{}", field.name());
            if variables.contains(&name) || (prefix.is_empty() && field.name() == body) {
                continue;
            }
            match field.kind() {
                // Maps have no query-string form.
                _ if field.is_map() => {}
                Kind::Message(inner) if well_known(inner.full_name()).is_none() => {
                    if !field.is_list() {
                        self.query_parameters(
                            &inner,
                            &format!("{name}."),
                            variables,
                            body,
                            out,
                            seen,
                        );
                    }
                }
                _ => out.push(json!({
                    "name": name,
                    "in": "query",
                    "required": required([&field].into_iter()).len() == 1,
                    "description": self.field_description(&field),
                    "schema": self.constrained_schema(&field),
                })),
            }
        }
        seen.pop();
    }

    fn field_description(&self, field: &FieldDescriptor) -> String {
        self.comments.of(&field.parent_file(), field.path())
    }

    /// A field's schema with its comment, whether it is output only and
    /// whether it takes `null`: a `$ref` is wrapped in `allOf`, since tools
    /// written for OpenAPI 3.0 ignore the siblings of a `$ref`.
    fn property_schema(&mut self, field: &FieldDescriptor) -> Value {
        let schema = self.constrained_schema(field);
        let description = self.field_description(field);
        let read_only = output_only(field);
        // The protobuf JSON mapping reads `null` as the field's default:
        // a field that may be left out may be sent as `null` too.
        let nullable = !read_only && required([field].into_iter()).is_empty();
        if description.is_empty() && !read_only && !nullable {
            return schema;
        }
        let mut object = match schema {
            Value::Object(object) if !object.contains_key("$ref") => object,
            reference => {
                let mut wrapper = Map::new();
                wrapper.insert("allOf".into(), json!([reference]));
                wrapper
            }
        };
        if !description.is_empty() {
            object.insert("description".into(), json!(description));
        }
        if read_only {
            object.insert("readOnly".into(), json!(true));
        }
        if nullable {
            allow_null(&mut object);
        }
        Value::Object(object)
    }

    /// A field's schema with the bounds its proto declares. The elements
    /// of a repeated request field are a schema of their own: the
    /// transcoder skips a `null` element and flattens nested arrays.
    fn constrained_schema(&mut self, field: &FieldDescriptor) -> Value {
        let mut schema = constrain(field, self.field_schema(field));
        if field.is_list() && !output_only(field) {
            let name = format!(
                "{}.{}.element",
                field.parent_message().full_name(),
                field.name()
            );
            let this = json!({"$ref": format!("#/components/schemas/{name}")});
            let element = json!({
                "description": format!(
                    "An element of `{}`: the transcoder skips `null` and flattens nested arrays.",
                    field.name()
                ),
                "anyOf": [schema["items"].take(), {"type": "null"}, {"type": "array", "items": this}],
            });
            self.own_schemas.insert(name, element);
            schema["items"] = this;
        }
        schema
    }

    fn field_schema(&mut self, field: &FieldDescriptor) -> Value {
        if let Kind::Message(entry) = field.kind()
            && field.is_map()
        {
            let value = entry.map_entry_value_field();
            return json!({
                "type": "object",
                "additionalProperties": self.kind_schema(&value.kind()),
            });
        }
        let schema = self.kind_schema(&field.kind());
        if field.is_list() {
            json!({"type": "array", "items": schema})
        } else {
            schema
        }
    }

    fn kind_schema(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "uint32"}),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64"})
            }
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte"}),
            Kind::Message(message) => self.message_ref(message),
            Kind::Enum(enumeration) => self.enum_ref(enumeration),
        }
    }

    pub(super) fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(schema) = well_known(message.full_name()) {
            return schema;
        }
        self.referenced.insert(message.full_name().to_owned());
        json!({"$ref": format!("#/components/schemas/{}", message.full_name())})
    }

    fn enum_ref(&mut self, enumeration: &EnumDescriptor) -> Value {
        self.referenced.insert(enumeration.full_name().to_owned());
        json!({"$ref": format!("#/components/schemas/{}", enumeration.full_name())})
    }

    /// The schema of every referenced message and enum, and of what they
    /// refer to in turn.
    pub(super) fn schemas(&mut self) -> Result<Map<String, Value>, String> {
        let mut schemas = Map::new();
        loop {
            let pending: Vec<String> = self
                .referenced
                .iter()
                .filter(|name| !schemas.contains_key(*name))
                .cloned()
                .collect();
            if pending.is_empty() {
                return Ok(schemas);
            }
            for name in pending {
                let schema = if let Some(message) = self.pool.get_message_by_name(&name) {
                    self.message_schema(&message)
                } else if let Some(enumeration) = self.pool.get_enum_by_name(&name) {
                    self.enum_schema(&enumeration)
                } else {
                    return Err(format!("{name} is not in the descriptor set"));
                };
                schemas.insert(name, schema);
            }
        }
    }

    fn message_schema(&mut self, message: &MessageDescriptor) -> Value {
        let mut properties = Map::new();
        let fields: Vec<FieldDescriptor> = message.fields().collect();
        for field in &fields {
            let schema = self.property_schema(field);
            properties.insert(field.name().to_owned(), schema);
        }
        let mut schema = json!({
            "type": "object",
            "description": self.comments.of(&message.parent_file(), message.path()),
            "properties": properties,
            "propertyNames": named(),
        });
        let required_fields = required(fields.iter());
        if !required_fields.is_empty() {
            schema["required"] = json!(required_fields);
        }
        schema
    }

    fn enum_schema(&self, enumeration: &EnumDescriptor) -> Value {
        let file = enumeration.parent_file();
        let mut description = self.comments.of(&file, enumeration.path());
        description.push('\n');
        for value in enumeration.values() {
            let comment = self.comments.of(&file, value.path());
            description.push_str(&format!(
                "\n- `{}`: {}",
                value.name(),
                comment.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
        json!({
            "type": "string",
            "description": description.trim(),
            "enum": enumeration.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
        })
    }
}

/// `schema` that also takes `null` (OpenAPI 3.1: JSON Schema's `null`
/// type): a `$ref`, bare or wrapped in `allOf`, becomes an `anyOf` with
/// `null`, and an `anyOf` gains it.
fn allow_null(schema: &mut Map<String, Value>) {
    if let Some(Value::String(kind)) = schema.get("type").cloned() {
        schema.insert("type".into(), json!([kind, "null"]));
        if let Some(Value::Array(values)) = schema.get_mut("enum") {
            values.push(Value::Null);
        }
    } else if let Some(reference) = schema.remove("allOf") {
        let mut alternatives = reference.as_array().cloned().unwrap_or_default();
        alternatives.push(json!({"type": "null"}));
        schema.insert("anyOf".into(), Value::Array(alternatives));
    } else if let Some(Value::Array(alternatives)) = schema.get_mut("anyOf") {
        alternatives.push(json!({"type": "null"}));
    } else if let Some(reference) = schema.remove("$ref") {
        schema.insert(
            "anyOf".into(),
            json!([{"$ref": reference}, {"type": "null"}]),
        );
    }
}

/// A field path (`device.model`) in `message`.
fn resolve_field(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let field = message.get_field_by_name(head)?;
    match (rest, field.kind()) {
        (None, _) => Some(field),
        (Some(rest), Kind::Message(inner)) => resolve_field(&inner, rest),
        (Some(_), _) => None,
    }
}

/// The JSON shape of a well-known type, which the protobuf JSON mapping
/// prints specially.
fn well_known(full_name: &str) -> Option<Value> {
    let nullable = |schema: Value| {
        let mut schema = schema;
        if let Value::Object(object) = &mut schema {
            allow_null(object);
        }
        schema
    };
    Some(match full_name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "description": "Seconds with an `s` suffix, such as `1.5s`."})
        }
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.Any" => json!({
            "type": "object",
            "description": "A message of the type `@type` names, its fields beside `@type`.",
            "properties": {"@type": {"type": "string"}},
            "additionalProperties": true,
        }),
        "google.protobuf.DoubleValue" => nullable(json!({"type": "number", "format": "double"})),
        "google.protobuf.FloatValue" => nullable(json!({"type": "number", "format": "float"})),
        "google.protobuf.Int64Value" => nullable(json!({"type": "string", "format": "int64"})),
        "google.protobuf.UInt64Value" => nullable(json!({"type": "string", "format": "uint64"})),
        "google.protobuf.Int32Value" => nullable(json!({"type": "integer", "format": "int32"})),
        "google.protobuf.UInt32Value" => nullable(json!({"type": "integer", "format": "uint32"})),
        "google.protobuf.BoolValue" => nullable(json!({"type": "boolean"})),
        "google.protobuf.StringValue" => nullable(json!({"type": "string"})),
        "google.protobuf.BytesValue" => nullable(json!({"type": "string", "format": "byte"})),
        _ => return None,
    })
}
