//! `api = "embed"`: the embedding models whose request and response shapes batchrun knows, so a job needs no
//! body template. The shapes are AWS's:
//! - Amazon Titan Text Embeddings V2 and G1: <https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-titan-embed-text.html>
//!   (V2: `inputText`, optional `dimensions` 256 / 512 / 1024, `normalize`; the reply's `embedding` and
//!   `inputTextTokenCount`);
//! - Cohere Embed v3 and v4: <https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-embed.html>
//!   (`texts`, up to 96 a call, `input_type`, `embedding_types`; v4 also `output_dimension` 256 / 512 / 1024 /
//!   1536).

use serde::Serialize;
use serde_json::{Value, json};

/// An embedding model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmbedFamily {
    /// `amazon.titan-embed-text-v2:0`.
    TitanV2,
    /// `amazon.titan-embed-text-v1`, the G1 model: `inputText` only.
    TitanG1,
    /// `cohere.embed-english-v3`, `cohere.embed-multilingual-v3`.
    CohereV3,
    /// `cohere.embed-v4:0`.
    CohereV4,
}

impl EmbedFamily {
    /// The family of a model id, inference profile id (`us.cohere.embed-v4:0`) or ARN ending in one.
    pub fn of(model_id: &str) -> Option<EmbedFamily> {
        let id = model_id.rsplit('/').next().unwrap_or(model_id);
        if id.contains("amazon.titan-embed-text-v2") {
            Some(EmbedFamily::TitanV2)
        } else if id.contains("amazon.titan-embed-text-v1")
            || id.contains("amazon.titan-embed-g1-text")
        {
            Some(EmbedFamily::TitanG1)
        } else if id.contains("cohere.embed-v4") {
            Some(EmbedFamily::CohereV4)
        } else if id.contains("cohere.embed-english-v3")
            || id.contains("cohere.embed-multilingual-v3")
        {
            Some(EmbedFamily::CohereV3)
        } else {
            None
        }
    }

    /// The vector lengths the model can be asked for; empty when it has one fixed length.
    pub fn dimensions(self) -> &'static [u32] {
        match self {
            EmbedFamily::TitanV2 => &[256, 512, 1024],
            EmbedFamily::CohereV4 => &[256, 512, 1024, 1536],
            EmbedFamily::TitanG1 | EmbedFamily::CohereV3 => &[],
        }
    }

    /// Whether it takes `normalize`.
    pub fn normalizes(self) -> bool {
        self == EmbedFamily::TitanV2
    }

    /// Whether it is a Cohere model (takes `input_type`, many texts a call).
    pub fn cohere(self) -> bool {
        matches!(self, EmbedFamily::CohereV3 | EmbedFamily::CohereV4)
    }
}

/// The most texts a Cohere Embed call takes (AWS's model-parameters page for Cohere Embed, cited above).
pub const COHERE_MAX_TEXTS: usize = 96;

/// Cohere's `input_type` values.
pub const INPUT_TYPES: [&str; 4] = [
    "search_document",
    "search_query",
    "classification",
    "clustering",
];

/// `api = "embed"`, checked: the family and what the request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbedSettings {
    /// The model family.
    pub family: EmbedFamily,
    /// Vector length, where the model lets it be chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// Titan V2: unit-length vectors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
    /// Cohere: what the texts are for (`search_document` for a corpus).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_type: Option<String>,
}

impl EmbedSettings {
    /// The InvokeModel body that embeds `texts` (one, except for Cohere).
    pub fn body(&self, texts: &[&str]) -> Value {
        match self.family {
            EmbedFamily::TitanG1 => json!({ "inputText": texts[0] }),
            EmbedFamily::TitanV2 => {
                let mut body = json!({ "inputText": texts[0] });
                if let Some(d) = self.dimensions {
                    body["dimensions"] = d.into();
                }
                if let Some(n) = self.normalize {
                    body["normalize"] = n.into();
                }
                body
            }
            EmbedFamily::CohereV3 | EmbedFamily::CohereV4 => {
                let mut body = json!({
                    "texts": texts,
                    "input_type": self.input_type.as_deref().unwrap_or(INPUT_TYPES[0]),
                    "embedding_types": ["float"],
                });
                if let Some(d) = self.dimensions {
                    body["output_dimension"] = d.into();
                }
                body
            }
        }
    }
}

impl EmbedSettings {
    /// How many records one call may carry: Cohere takes up to [`COHERE_MAX_TEXTS`] texts a call, so a job
    /// spends one request of its RPM quota on many chunks; Titan takes one.
    pub fn records_per_call(&self) -> usize {
        if self.family.cohere() {
            COHERE_MAX_TEXTS
        } else {
            1
        }
    }
}

/// One Cohere body for several records' bodies (each as [`EmbedSettings::body`] made it for one record): the
/// first body with every body's `texts`, in order. `None` if a body is not of that shape.
pub fn pack(bodies: &[&str]) -> Option<String> {
    let mut packed: Value = serde_json::from_str(bodies.first()?).ok()?;
    let mut texts = Vec::with_capacity(bodies.len());
    for body in bodies {
        let v: Value = serde_json::from_str(body).ok()?;
        texts.extend(v.get("texts")?.as_array()?.iter().cloned());
    }
    packed["texts"] = Value::Array(texts);
    Some(packed.to_string())
}

/// The reply to a packed Cohere call for `n` records, as `n` replies, each shaped as the reply to that record's
/// own call: its text and its vector (in every embedding type the reply holds), and the call's other members.
/// `None` when the reply does not hold `n` of each.
pub fn unpack(reply: &str, n: usize) -> Option<Vec<String>> {
    let reply: Value = serde_json::from_str(reply).ok()?;
    let nth = |list: &Value, i: usize| -> Option<Value> {
        let items = list.as_array().filter(|a| a.len() == n)?;
        Some(Value::Array(vec![items[i].clone()]))
    };
    (0..n)
        .map(|i| {
            let mut one = serde_json::Map::new();
            for (key, value) in reply.as_object()? {
                let part = match (key.as_str(), value) {
                    ("texts", list) => nth(list, i)?,
                    ("embeddings", Value::Object(by_type)) => Value::Object(
                        by_type
                            .iter()
                            .map(|(t, list)| Some((t.clone(), nth(list, i)?)))
                            .collect::<Option<_>>()?,
                    ),
                    ("embeddings", list) => nth(list, i)?,
                    _ => value.clone(),
                };
                one.insert(key.clone(), part);
            }
            Some(Value::Object(one).to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_known_by_id_profile_and_arn() {
        assert_eq!(
            EmbedFamily::of("amazon.titan-embed-text-v2:0"),
            Some(EmbedFamily::TitanV2)
        );
        assert_eq!(
            EmbedFamily::of("amazon.titan-embed-text-v1"),
            Some(EmbedFamily::TitanG1)
        );
        assert_eq!(
            EmbedFamily::of("us.cohere.embed-v4:0"),
            Some(EmbedFamily::CohereV4)
        );
        assert_eq!(
            EmbedFamily::of(
                "arn:aws:bedrock:us-east-1::foundation-model/cohere.embed-multilingual-v3"
            ),
            Some(EmbedFamily::CohereV3)
        );
        assert_eq!(
            EmbedFamily::of("anthropic.claude-3-haiku-20240307-v1:0"),
            None
        );
    }

    #[test]
    fn packed_calls_split_into_the_replies_of_single_calls() {
        let cohere = EmbedSettings {
            family: EmbedFamily::CohereV3,
            dimensions: None,
            normalize: None,
            input_type: None,
        };
        let bodies: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|t| cohere.body(&[t]).to_string())
            .collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        let packed: Value = serde_json::from_str(&pack(&refs).unwrap()).unwrap();
        assert_eq!(packed, cohere.body(&["a", "b", "c"]));
        let reply = json!({"id": "r1", "response_type": "embeddings_by_type", "texts": ["a", "b", "c"],
            "embeddings": {"float": [[0.1], [0.2], [0.3]], "int8": [[1], [2], [3]]}});
        let split = unpack(&reply.to_string(), 3).unwrap();
        let second: Value = serde_json::from_str(&split[1]).unwrap();
        assert_eq!(
            second,
            json!({"id": "r1", "response_type": "embeddings_by_type", "texts": ["b"],
                "embeddings": {"float": [[0.2]], "int8": [[2]]}})
        );
        let floats = json!({"id": "r2", "response_type": "embeddings_floats", "texts": ["a", "b"],
            "embeddings": [[0.1], [0.2]]});
        let split = unpack(&floats.to_string(), 2).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&split[0]).unwrap()["embeddings"],
            json!([[0.1]])
        );
        // A reply that does not hold one vector a record is not split.
        assert_eq!(unpack(&floats.to_string(), 3), None);
        assert_eq!(unpack("not json", 1), None);
        assert_eq!(pack(&["{\"inputText\": \"x\"}"]), None);
    }

    #[test]
    fn bodies_take_the_shape_of_the_family() {
        let titan = EmbedSettings {
            family: EmbedFamily::TitanV2,
            dimensions: Some(256),
            normalize: Some(true),
            input_type: None,
        };
        assert_eq!(
            titan.body(&["hello"]),
            json!({"inputText": "hello", "dimensions": 256, "normalize": true})
        );
        let cohere = EmbedSettings {
            family: EmbedFamily::CohereV3,
            dimensions: None,
            normalize: None,
            input_type: None,
        };
        assert_eq!(
            cohere.body(&["a", "b"]),
            json!({"texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"]})
        );
    }
}
