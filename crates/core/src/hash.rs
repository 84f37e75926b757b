//! A stable content hash of a record, for change detection: the loader stores it per worker
//! (KV `peoplesync_applied`) and skips records whose hash has not changed. The encoding is
//! canonical JSON (object keys sorted at every level, no whitespace, UTF-8 unescaped), so
//! key order never changes the hash.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Hex SHA-256 of `record`'s canonical encoding; independent of key order.
pub fn record_hash(record: &Map<String, Value>) -> String {
    let mut text = Vec::with_capacity(1024);
    write_object(record, &mut text);
    hex::encode(Sha256::digest(&text))
}

/// The record as JSON text (serde_json's compact encoding, to send as it is) together with its
/// [`record_hash`], from one serialisation: serde_json's maps keep their keys sorted, so that
/// text is the canonical encoding itself. (Were maps ever built to keep insertion order — a
/// cargo feature of serde_json, checked once — the hash falls back to [`record_hash`].)
pub fn record_json(
    record: &Map<String, Value>,
) -> Result<(Box<serde_json::value::RawValue>, String), serde_json::Error> {
    let json = serde_json::value::to_raw_value(record)?;
    let hash = if maps_are_sorted() {
        hex::encode(Sha256::digest(json.get().as_bytes()))
    } else {
        record_hash(record)
    };
    Ok((json, hash))
}

/// Whether `serde_json::Map` iterates in key order (it does unless its `preserve_order`
/// feature is on somewhere in the build); the same for every map, so checked once.
fn maps_are_sorted() -> bool {
    static SORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut map = Map::new();
        map.insert("b".into(), Value::Null);
        map.insert("a".into(), Value::Null);
        map.keys().map(String::as_str).eq(["a", "b"])
    })
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_scalar(key, out);
        out.push(b':');
        write_value(value, out);
    }
    out.push(b'}');
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        // Scalars have one JSON spelling each.
        other => write_scalar(other, out),
    }
}

/// serde_json's compact encoding of a string or scalar. Writing to a `Vec` cannot fail,
/// and none of these values can fail to serialise.
fn write_scalar<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn hash_is_hex_sha256() {
        let h = record_hash(&map(json!({"EMAIL": "a@b.c"})));
        assert_eq!(h.len(), 64);
        assert!(h.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_sent_json_hashes_like_the_record() {
        let records = [
            json!({}),
            json!({"EMAIL": "a@b.c", "USER": "a", "X": null, "N": 1.5, "B": true}),
            json!({"Z": "quote \" backslash \\ tab \t é 日本", "A": [3, {"y": 1, "b": [null]}]}),
            json!({"SAAS": {"sync_key": "k", "name": "App", "selected_saas_id": 7}, "EMAIL": "x@y.z"}),
        ];
        for record in records {
            let record = map(record);
            let (json, hash) = record_json(&record).unwrap();
            assert_eq!(hash, record_hash(&record), "{}", json.get());
            assert_eq!(
                serde_json::from_str::<Value>(json.get()).unwrap(),
                Value::Object(record)
            );
        }
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a: Map<String, Value> = [("A", json!(1)), ("B", json!({"y": 1, "x": 2}))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let b: Map<String, Value> = [("B", json!({"x": 2, "y": 1})), ("A", json!(1))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(record_hash(&a), record_hash(&b));
    }

    #[test]
    fn any_value_change_changes_the_hash() {
        let base = record_hash(&map(json!({"EMAIL": "a@b.c", "X": null})));
        assert_ne!(base, record_hash(&map(json!({"EMAIL": "a@b.c", "X": ""}))));
        assert_ne!(base, record_hash(&map(json!({"EMAIL": "a@b.c"}))));
        assert_ne!(
            base,
            record_hash(&map(json!({"EMAIL": "A@b.c", "X": null})))
        );
        assert_ne!(
            record_hash(&map(json!({"A": "1"}))),
            record_hash(&map(json!({"A": 1})))
        );
    }

    #[test]
    fn hash_is_stable_across_releases() {
        // Stored hashes must stay valid: this value may never change. It equals Python's
        // sha256(json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False)).
        assert_eq!(
            record_hash(&map(
                json!({"USER": "ada@example.com", "EMAIL": "ada@example.com", "Ü": "ß"})
            )),
            "03cfe037a11a078e83af32bcc8abe64cf82c93aff17556dc043d2e4afa191d61"
        );
    }
}
