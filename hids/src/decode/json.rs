//! The JSON plugin decoder (`<plugin_decoder>JSON_Decoder</plugin_decoder>`): a JSON object in the
//! message becomes fields, nested keys as dotted names (`request.method`), arrays of plain values
//! as comma-separated text, other arrays as compact JSON. `null` values are left out.

use std::sync::Arc;

use serde_json::Value;

/// Deepest nesting flattened; deeper values are kept as compact JSON text.
const MAX_DEPTH: usize = 32;

/// Parses the JSON object that starts at the first `{` of `text` and appends its fields. Returns
/// false (and adds nothing) when there is no valid object there.
pub fn decode_json(text: &str, fields: &mut Vec<crate::event::DecodedField>) -> bool {
    let Some(start) = text.find('{') else {
        return false;
    };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text[start..].trim_end()) else {
        return false;
    };
    let mut prefix = String::new();
    flatten_object(&map, &mut prefix, 0, fields);
    true
}

fn flatten_object(
    map: &serde_json::Map<String, Value>,
    prefix: &mut String,
    depth: usize,
    fields: &mut Vec<crate::event::DecodedField>,
) {
    for (k, v) in map {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(k);
        match v {
            Value::Null => {}
            Value::Object(m) if depth < MAX_DEPTH => flatten_object(m, prefix, depth + 1, fields),
            other => {
                if let Some(s) = scalar_text(other) {
                    set(fields, prefix, s);
                }
            }
        }
        prefix.truncate(len);
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            if items
                .iter()
                .all(|i| !matches!(i, Value::Array(_) | Value::Object(_)))
            {
                items
                    .iter()
                    .filter_map(scalar_text)
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                v.to_string()
            }
        }
        Value::Object(_) => v.to_string(),
    })
}

/// Sets a field, replacing an earlier value of the same name (as OSSEC's fields are overwritten).
pub fn set(
    fields: &mut Vec<crate::event::DecodedField>,
    name: &str,
    value: impl Into<crate::event::FieldValue>,
) {
    let value = value.into();
    if let Some(slot) = fields.iter_mut().find(|(k, _)| &**k == name) {
        slot.1 = value;
    } else {
        fields.push((Arc::from(name), value));
    }
}

/// [`set`] with a name the caller already holds shared (a decoder's `order`): no copy of it.
pub fn set_shared(
    fields: &mut Vec<crate::event::DecodedField>,
    name: &Arc<str>,
    value: impl Into<crate::event::FieldValue>,
) {
    let value = value.into();
    if let Some(slot) = fields.iter_mut().find(|(k, _)| k == name) {
        slot.1 = value;
    } else {
        fields.push((name.clone(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_become_dotted_names() {
        let mut f = Vec::new();
        assert!(decode_json(
            r#"kong: {"request":{"method":"GET","uri":"/a","headers":{"host":"x"}},"status":401,"ok":false,"tags":["a","b"],"n":null,"objs":[{"a":1}]}"#,
            &mut f
        ));
        let get = |k: &str| f.iter().find(|(n, _)| &**n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("request.method"), Some("GET"));
        assert_eq!(get("request.headers.host"), Some("x"));
        assert_eq!(get("status"), Some("401"));
        assert_eq!(get("ok"), Some("false"));
        assert_eq!(get("tags"), Some("a,b"));
        assert_eq!(get("n"), None);
        assert_eq!(get("objs"), Some(r#"[{"a":1}]"#));
    }

    #[test]
    fn invalid_json_adds_nothing() {
        let mut f = Vec::new();
        assert!(!decode_json("{not json", &mut f));
        assert!(!decode_json("no object", &mut f));
        assert!(!decode_json("[1,2]", &mut f));
        assert!(f.is_empty());
    }
}
