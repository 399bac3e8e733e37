//! Turning input fields into request bodies: the prompt template (minijinja, strict about undefined names),
//! the Converse request shape, and InvokeModel bodies taken as given or rendered from a body template.

use minijinja::value::{Serde, ValueKind};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};

use crate::job::{Api, CacheTtl, Job, ModelSettings};
use crate::tokens;

/// A request body, with what admission needs to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    /// The body, compact JSON.
    pub request: String,
    /// Estimated input tokens.
    pub est_tokens: u64,
    /// Output tokens reserved.
    pub max_tokens: u64,
}

/// Builds request bodies for one job.
pub struct RequestBuilder {
    model: ModelSettings,
    env: Environment<'static>,
    has_template: bool,
    has_body_template: bool,
}

impl std::fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("model", &self.model.id)
            .finish()
    }
}

// The escaping of the body template: a value placed into the JSON body is written as the inside of a JSON
// string, so no input text can close the string and add or change fields ("{{ text }}" between quotes is a
// string whatever the text holds; outside quotes, text that is not a bare number or word makes the body
// invalid JSON and the record fails). Numbers, booleans, lists and maps are written as JSON; `tojson` output
// (and anything marked `safe`) is written as it is.
const JSON_STRING: &str = "json-string";

fn format_value(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    let json_string = matches!(state.auto_escape(), AutoEscape::Custom(n) if n == JSON_STRING);
    if !json_string || value.is_safe() {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = match value.kind() {
        ValueKind::String => {
            let quoted = serde_json::to_string(value.as_str().unwrap_or_default())
                .expect("a string serializes");
            quoted[1..quoted.len() - 1].to_string()
        }
        ValueKind::Undefined | ValueKind::None => "null".to_string(),
        _ => serde_json::to_string(value).map_err(|e| {
            minijinja::Error::new(
                minijinja::ErrorKind::BadSerialization,
                format!("cannot write the value as JSON: {e}"),
            )
        })?,
    };
    out.write_str(&text).map_err(minijinja::Error::from)
}

fn render_error(e: minijinja::Error) -> String {
    // minijinja's Display carries the kind and detail; keep it on one line for the record's error message.
    let mut message = e.to_string();
    if let Some(detail) = e.detail()
        && !message.contains(detail)
    {
        message = format!("{message}: {detail}");
    }
    message.replace('\n', " ")
}

/// What `{{ cache_point }}` renders to: characters from Unicode's private use area that no text is expected to
/// hold, replaced by a Converse cache point when the prompt is split into blocks.
const CACHE_POINT: &str = "\u{E000}batchrun:cache-point\u{E000}";

impl RequestBuilder {
    /// A builder for `job`. The templates were checked when the job was loaded.
    pub fn new(job: &Job) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name == "body" {
                AutoEscape::Custom(JSON_STRING.into())
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(format_value);
        // `{{ cache_point }}` in a prompt template marks the end of a prefix the records share.
        env.add_global("cache_point", CACHE_POINT);
        if let Some(t) = &job.input.template {
            env.add_template_owned("prompt", t.clone())
                .expect("checked at load");
        }
        if let Some(t) = &job.input.body_template {
            env.add_template_owned("body", t.clone())
                .expect("checked at load");
        }
        RequestBuilder {
            model: job.model.clone(),
            env,
            has_template: job.input.template.is_some(),
            has_body_template: job.input.body_template.is_some(),
        }
    }

    /// Whether the job renders prompts from a template.
    pub fn has_template(&self) -> bool {
        self.has_template
    }

    fn render(&self, name: &str, fields: &Value) -> Result<String, String> {
        let template = self.env.get_template(name).expect("added in new");
        template
            .render(Serde(fields))
            .map_err(|e| format!("the {name} template failed: {}", render_error(e)))
    }

    /// A request from named fields (a JSONL object, a CSV row, a document): the body template for InvokeModel,
    /// else the prompt template, else `fallback_prompt` (a `prompt` field or the document's text).
    pub fn from_fields(
        &self,
        fields: &Value,
        fallback_prompt: Option<&str>,
    ) -> Result<Built, String> {
        if self.model.api == Api::Invoke {
            if !self.has_body_template {
                return Err("with api = \"invoke\" each line needs a `modelInput` body, or set input.body-template".into());
            }
            let rendered = self.render("body", fields)?;
            let body: Value = serde_json::from_str(&rendered).map_err(|e| {
                format!(
                    "the body template did not render valid JSON ({e}); values are written as the inside of a \
                     JSON string, so put text between quotes (\"{{{{ text }}}}\") or use `{{{{ text | tojson }}}}`"
                )
            })?;
            return self.from_model_input(&body);
        }
        let prompt = if self.has_template {
            self.render("prompt", fields)?
        } else {
            fallback_prompt
                .ok_or("no `prompt` or `messages` field; add one, or set input.template")?
                .to_string()
        };
        if prompt.trim().is_empty() {
            return Err("empty prompt: the record has no text to send".into());
        }
        if let Some(embed) = &self.model.embed {
            // Embeddings have no prompt cache.
            let prompt = prompt.replace(CACHE_POINT, "");
            let body = embed.body(&[&prompt]);
            return Ok(Built {
                request: body.to_string(),
                est_tokens: tokens::estimate(&prompt),
                max_tokens: 0,
            });
        }
        let messages = json!([{ "role": "user", "content": self.content(&prompt) }]);
        Ok(self.converse(messages, None))
    }

    /// A rendered prompt's content blocks: its text, split where the template put `{{ cache_point }}` (the first
    /// one) with a cache point between the two parts.
    fn content(&self, prompt: &str) -> Value {
        match prompt.split_once(CACHE_POINT) {
            Some((prefix, rest)) => {
                let rest = rest.replace(CACHE_POINT, "");
                let mut blocks = vec![json!({ "text": prefix }), self.cache_point()];
                if !rest.is_empty() {
                    blocks.push(json!({ "text": rest }));
                }
                Value::Array(blocks)
            }
            None => json!([{ "text": prompt }]),
        }
    }

    /// A Converse cache point, with the job's time to live.
    fn cache_point(&self) -> Value {
        match self.model.cache_ttl {
            Some(CacheTtl::OneHour) => json!({ "cachePoint": { "type": "default", "ttl": "1h" } }),
            Some(CacheTtl::FiveMinutes) => {
                json!({ "cachePoint": { "type": "default", "ttl": "5m" } })
            }
            None => json!({ "cachePoint": { "type": "default" } }),
        }
    }

    /// A Converse request from a `messages` list (`{"role", "content"}` with content a string or a list of
    /// `{"text"}` blocks) and an optional per-record system prompt.
    pub fn from_messages(&self, messages: &Value, system: Option<&str>) -> Result<Built, String> {
        if self.model.api != Api::Converse {
            return Err(
                "`messages` records are for api = \"converse\"; with invoke give `modelInput`, with embed a \
                 `prompt` (or input.template)"
                    .into(),
            );
        }
        let list = messages
            .as_array()
            .ok_or("`messages` must be a list of {\"role\", \"content\"}")?;
        if list.is_empty() {
            return Err("empty prompt: `messages` is empty".into());
        }
        let mut normalized = Vec::with_capacity(list.len());
        let mut any_text = false;
        for (i, m) in list.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            if role != "user" && role != "assistant" {
                return Err(format!(
                    "messages[{i}].role must be \"user\" or \"assistant\""
                ));
            }
            let content = match m.get("content") {
                Some(Value::String(s)) => vec![json!({ "text": s })],
                Some(Value::Array(blocks)) => blocks.clone(),
                _ => {
                    return Err(format!(
                        "messages[{i}].content must be text or a list of {{\"text\"}} blocks"
                    ));
                }
            };
            any_text |= content.iter().any(|b| {
                b.get("text")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !t.trim().is_empty())
            });
            normalized.push(json!({ "role": role, "content": content }));
        }
        if !any_text {
            return Err("empty prompt: no message has text".into());
        }
        Ok(self.converse(Value::Array(normalized), system))
    }

    /// An InvokeModel request whose body is given (`modelInput` of a Bedrock batch record).
    pub fn from_model_input(&self, body: &Value) -> Result<Built, String> {
        if self.model.api == Api::Converse {
            return Err(
                "`modelInput` records are InvokeModel bodies: set model.api = \"invoke\"".into(),
            );
        }
        if !body.is_object() {
            return Err(
                "`modelInput` must be a JSON object (the model's native request body)".into(),
            );
        }
        let max_tokens = body_max_tokens(body)
            .or(self.model.max_tokens.map(u64::from))
            .unwrap_or(0);
        if max_tokens > u64::from(crate::job::MAX_TOKENS) {
            return Err(format!(
                "the body's output cap ({max_tokens} tokens) is above what Bedrock accepts ({})",
                crate::job::MAX_TOKENS
            ));
        }
        Ok(Built {
            request: body.to_string(),
            est_tokens: tokens::estimate_body(body),
            max_tokens,
        })
    }

    fn converse(&self, messages: Value, system: Option<&str>) -> Built {
        let mut body = Map::new();
        body.insert("messages".into(), messages);
        if let Some(s) = system.or(self.model.system.as_deref()) {
            let mut blocks = vec![json!({ "text": s })];
            if self.model.cache_system {
                blocks.push(self.cache_point());
            }
            body.insert("system".into(), Value::Array(blocks));
        }
        let mut config = Map::new();
        let max_tokens = self
            .model
            .max_tokens
            .expect("converse jobs have max-tokens");
        config.insert("maxTokens".into(), json!(max_tokens));
        if let Some(t) = self.model.temperature {
            config.insert("temperature".into(), json!(t));
        }
        if let Some(p) = self.model.top_p {
            config.insert("topP".into(), json!(p));
        }
        body.insert("inferenceConfig".into(), Value::Object(config));
        let body = Value::Object(body);
        let est_tokens = tokens::estimate_body(&body["messages"])
            + body.get("system").map_or(0, tokens::estimate_body);
        Built {
            request: body.to_string(),
            est_tokens,
            max_tokens: u64::from(max_tokens),
        }
    }
}

/// The output cap a native body sets, under the names the model families use.
fn body_max_tokens(body: &Value) -> Option<u64> {
    ["max_tokens", "max_gen_len", "maxTokens", "max_new_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .or_else(|| {
            body.pointer("/inferenceConfig/maxTokens")
                .and_then(Value::as_u64)
        })
        .or_else(|| {
            body.pointer("/inferenceConfig/max_new_tokens")
                .and_then(Value::as_u64)
        })
        .or_else(|| {
            body.pointer("/textGenerationConfig/maxTokenCount")
                .and_then(Value::as_u64)
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn builder(body_template: &str) -> RequestBuilder {
        let text = format!(
            "[job]\nname = \"t\"\n[model]\nid = \"amazon.titan-embed-text-v2:0\"\napi = \"invoke\"\n\
             [input]\npath = \"src\"\nformat = \"documents\"\nbody-template = '{body_template}'\n\
             [output]\npath = \"out\"\n"
        );
        RequestBuilder::new(&Job::parse(&text, Path::new("t.toml")).unwrap())
    }

    fn body(b: &RequestBuilder, fields: Value) -> Result<Value, String> {
        b.from_fields(&fields, None)
            .map(|built| serde_json::from_str(&built.request).unwrap())
    }

    #[test]
    fn no_input_can_add_or_change_fields_of_a_body_template() {
        let attack = r#"hello", "dimensions": 1024, "normalize": false, "x": ""#;
        let quoted = builder(r#"{"dimensions": 256, "inputText": "{{ text }}"}"#);
        let b = body(&quoted, json!({ "text": attack })).unwrap();
        assert_eq!(b, json!({ "dimensions": 256, "inputText": attack }));
        // Quotes, backslashes and control characters stay inside the string.
        let odd = "a\\\"b\n\t\u{1}c</script>";
        assert_eq!(
            body(&quoted, json!({ "text": odd })).unwrap()["inputText"],
            odd
        );

        // tojson is written as it is; numbers and lists as JSON.
        let filtered = builder(
            r#"{"dimensions": {{ n }}, "inputText": {{ text | tojson }}, "tags": {{ tags }}}"#,
        );
        let b = body(
            &filtered,
            json!({ "text": attack, "n": 512, "tags": ["x", "y"] }),
        )
        .unwrap();
        assert_eq!(
            b,
            json!({ "dimensions": 512, "inputText": attack, "tags": ["x", "y"] })
        );

        // Text placed outside quotes cannot become JSON syntax: the record fails instead.
        let bare = builder(r#"{"dimensions": {{ n }}, "inputText": "x"}"#);
        let err = body(&bare, json!({ "n": r#"1, "normalize": false"# })).unwrap_err();
        assert!(err.contains("did not render valid JSON"), "{err}");
        assert_eq!(
            body(&bare, json!({ "n": "256" })).unwrap()["dimensions"],
            256
        );
    }

    #[test]
    fn an_output_cap_beyond_what_bedrock_takes_fails_the_record() {
        let b = builder(r#"{"inputText": "{{ text }}"}"#);
        let err = b
            .from_model_input(&json!({ "max_tokens": u64::MAX, "messages": [] }))
            .unwrap_err();
        assert!(err.contains("above what Bedrock accepts"), "{err}");
        let ok = b
            .from_model_input(&json!({ "max_tokens": 2_147_483_647u64 }))
            .unwrap();
        assert_eq!(ok.max_tokens, 2_147_483_647);
    }
}
