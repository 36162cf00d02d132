//! The charging-relevant content of a CCR, as the JSON payload of a charging data record:
//! Subscription-Ids, the Service-Information tree (IMS-Information, Service-Generic-
//! Information, IM-Information, …) and User-Equipment-Info, with dictionary names.

use crate::ccr::Ccr;
use serde_json::{json, Map, Value};
use tollgate_codec::codes::*;
use tollgate_codec::describe::{describe_avp, Described};
use tollgate_codec::{Dictionary, Limits, Message};

fn to_json(d: &Described) -> Value {
    if d.members.is_empty() {
        // Enumerations read "NAME (n)"; keep them as text so auditors see both. U+0000 (valid in
        // a UTF8String) cannot be stored in PostgreSQL's jsonb: it is kept as U+FFFD, so one odd
        // character cannot make the record, and with it the CCR-T, fail forever.
        return Value::String(d.value.replace('\0', "\u{FFFD}"));
    }
    let mut obj = Map::new();
    for m in &d.members {
        let name = m
            .name
            .clone()
            .unwrap_or_else(|| format!("{}:{}", m.vendor, m.code));
        let v = to_json(m);
        match obj.get_mut(&name) {
            Some(Value::Array(list)) => list.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
            None => {
                obj.insert(name, v);
            }
        }
    }
    Value::Object(obj)
}

/// The record's `service_data` payload.
pub fn charging_data(m: &Message, ccr: &Ccr) -> Value {
    let dict = Dictionary::builtin();
    let limits = Limits::default();
    let mut out = json!({
        "session_id": ccr.session_id,
        "origin_host": ccr.origin_host,
        "service_context_id": ccr.service_context_id,
        "cc_request_number": ccr.request_number,
        "subscription_ids": ccr.subscription_ids.iter()
            .map(|s| s.to_string()).collect::<Vec<_>>(),
    });
    if let Some(tc) = ccr.termination_cause {
        out["termination_cause"] = json!(tc);
    }
    for (key, code) in [
        ("service_information", SERVICE_INFORMATION),
        ("user_equipment_info", USER_EQUIPMENT_INFO),
    ] {
        if let Some(a) = m.find(code) {
            out[key] = to_json(&describe_avp(dict, a, 0, &limits));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_codec::Avp;

    #[test]
    fn nul_in_a_text_value_is_kept_as_replacement_character() {
        let avp = Avp::from_str(SUBSCRIPTION_ID_DATA, "a\0b");
        let d = describe_avp(Dictionary::builtin(), &avp, 0, &Limits::default());
        assert_eq!(to_json(&d), Value::String("a\u{FFFD}b".into()));
    }
}
