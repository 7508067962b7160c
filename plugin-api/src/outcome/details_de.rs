//! [`Details`]' deserializer. The one serde derives for an internally tagged enum buffers the
//! whole object into serde's private content tree before it looks at the tag: 9.4 k of the
//! 70 k instructions a balance read adds over the direct call (`gatehouse-bench callgrind`).
//! Every `Details` this crate serializes starts with its `type`, so that case reads the tag,
//! then the variant's fields straight from the rest of the object. Anything else (the tag later
//! in the object, as in a `serde_json::Value`, whose keys are sorted; the sequence form) goes
//! through a `serde_json::Value` to the derived deserializer of the same shape, [`Tagged`]:
//! the same answers and errors, only slower. The tests hold the two paths to each other.

use std::fmt;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{BalanceEntry, Details, ReportRecord, SavedAccount, TransactionInfo, WebhookResult};

const TAG: &str = "type";

/// The tag, read as the derived deserializer reads it (its errors, its variant indexes).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", variant_identifier)]
enum Tag {
    None,
    PaymentPage,
    Report,
    Balance,
    SavedAccounts,
    Transaction,
    Webhook,
}

/// Each struct variant's fields. `duplicate_tag` catches a second `type` key, which the derived
/// deserializer refuses as a duplicate field.
#[derive(Deserialize)]
struct PaymentPage {
    url: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "type")]
    duplicate_tag: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Report {
    records: Vec<ReportRecord>,
    #[serde(default)]
    raw_text: Option<String>,
    #[serde(default, rename = "type")]
    duplicate_tag: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Balance {
    balances: Vec<BalanceEntry>,
    #[serde(default, rename = "type")]
    duplicate_tag: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct SavedAccounts {
    accounts: Vec<SavedAccount>,
    #[serde(default, rename = "type")]
    duplicate_tag: Option<IgnoredAny>,
}

/// The derived deserializer of `Details`' JSON shape: the reference the fast path follows.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Tagged {
    None,
    PaymentPage(PaymentPage),
    Report(Report),
    Balance(Balance),
    SavedAccounts(SavedAccounts),
    Transaction(TransactionInfo),
    Webhook(WebhookResult),
}

impl From<Tagged> for Details {
    fn from(tagged: Tagged) -> Self {
        match tagged {
            Tagged::None => Details::None,
            Tagged::PaymentPage(page) => Details::PaymentPage {
                url: page.url,
                token: page.token,
            },
            Tagged::Report(report) => Details::Report {
                records: report.records,
                raw_text: report.raw_text,
            },
            Tagged::Balance(balance) => Details::Balance {
                balances: balance.balances,
            },
            Tagged::SavedAccounts(saved) => Details::SavedAccounts {
                accounts: saved.accounts,
            },
            Tagged::Transaction(info) => Details::Transaction(info),
            Tagged::Webhook(result) => Details::Webhook(result),
        }
    }
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DetailsVisitor)
    }
}

struct DetailsVisitor;

fn refuse_duplicate_tag<E: de::Error>(duplicate: Option<IgnoredAny>) -> Result<(), E> {
    match duplicate {
        Some(_) => Err(E::duplicate_field(TAG)),
        None => Ok(()),
    }
}

/// The derived deserializer's answer for `value`, as an error of `E`.
fn through_value<E: de::Error>(value: serde_json::Value) -> Result<Details, E> {
    Tagged::deserialize(value)
        .map(Details::from)
        .map_err(E::custom)
}

impl<'de> Visitor<'de> for DetailsVisitor {
    type Value = Details;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("internally tagged enum Details")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field(TAG));
        };
        if first != TAG {
            // The slow way: the whole object, then the derived deserializer.
            let mut object = serde_json::Map::new();
            object.insert(first, map.next_value()?);
            while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                object.insert(key, value);
            }
            return through_value(serde_json::Value::Object(object));
        }
        let tag: Tag = map.next_value()?;
        let rest = MapAccessDeserializer::new(map);
        Ok(match tag {
            Tag::None => {
                drain_refusing_tag(rest)?;
                Details::None
            }
            Tag::PaymentPage => {
                let page = PaymentPage::deserialize(rest)?;
                refuse_duplicate_tag(page.duplicate_tag)?;
                Details::PaymentPage {
                    url: page.url,
                    token: page.token,
                }
            }
            Tag::Report => {
                let report = Report::deserialize(rest)?;
                refuse_duplicate_tag(report.duplicate_tag)?;
                Details::Report {
                    records: report.records,
                    raw_text: report.raw_text,
                }
            }
            Tag::Balance => {
                let balance = Balance::deserialize(rest)?;
                refuse_duplicate_tag(balance.duplicate_tag)?;
                Details::Balance {
                    balances: balance.balances,
                }
            }
            Tag::SavedAccounts => {
                let saved = SavedAccounts::deserialize(rest)?;
                refuse_duplicate_tag(saved.duplicate_tag)?;
                Details::SavedAccounts {
                    accounts: saved.accounts,
                }
            }
            // These two structs are the crate's public types: a second `type` key in them is
            // ignored as an unknown field, where the derived deserializer refused it.
            Tag::Transaction => Details::Transaction(TransactionInfo::deserialize(rest)?),
            Tag::Webhook => Details::Webhook(WebhookResult::deserialize(rest)?),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Details, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            items.push(item);
        }
        through_value(serde_json::Value::Array(items))
    }
}

/// The rest of a unit variant's object: ignored, as the derived deserializer ignores it, except
/// a second tag.
fn drain_refusing_tag<'de, A: MapAccess<'de>>(
    rest: MapAccessDeserializer<A>,
) -> Result<(), A::Error> {
    struct Drain;
    impl<'de> Visitor<'de> for Drain {
        type Value = ();
        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("the rest of an object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == TAG {
                    return Err(de::Error::duplicate_field(TAG));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    Deserializer::deserialize_map(rest, Drain)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::money::{Currency, Money};
    use crate::outcome::{OutcomeStatus, WebhookEvent, WebhookReply};

    fn every_variant() -> Vec<Details> {
        let xof = |units: i64| Money::new(units, Currency::from_code("XOF").expect("XOF"));
        vec![
            Details::None,
            Details::PaymentPage {
                url: "https://pay.example/t/1".into(),
                token: Some("tok".into()),
            },
            Details::PaymentPage {
                url: "https://pay.example/t/2".into(),
                token: None,
            },
            Details::Report {
                records: vec![ReportRecord {
                    id: Some("r1".into()),
                    amount: Some(xof(700)),
                    amounts: BTreeMap::from([("fee".to_string(), xof(7))]),
                    raw: json!({"a": [1, "two", null]}),
                    ..ReportRecord::default()
                }],
                raw_text: Some("a;b\n".into()),
            },
            Details::Balance {
                balances: vec![
                    BalanceEntry {
                        name: "flooz".into(),
                        amount: xof(1_000_000),
                    },
                    BalanceEntry {
                        name: "tmoney \"quoted\" \\ ".into(),
                        amount: xof(0),
                    },
                ],
            },
            Details::SavedAccounts {
                accounts: vec![SavedAccount {
                    id: "acc-1".into(),
                    account_type: Some("card".into()),
                    name: None,
                    raw: Value::Null,
                }],
            },
            Details::Transaction(TransactionInfo {
                reference: Some("gh_1".into()),
                provider_status: Some("0".into()),
                raw: json!({"status": 0}),
                ..TransactionInfo::default()
            }),
            Details::Webhook(WebhookResult {
                event: Some(WebhookEvent {
                    event_id: "e1".into(),
                    event_type: "payment".into(),
                    status: OutcomeStatus::Succeeded,
                    provider_reference: Some("p1".into()),
                    reference: None,
                    amount: None,
                    raw: Value::Null,
                    verified: true,
                }),
                reply: WebhookReply {
                    status: 200,
                    content_type: None,
                    body: "OK".into(),
                },
            }),
        ]
    }

    /// The derived deserializer's answer for `text`: the reference (which names itself by its
    /// Rust name in "expected internally tagged enum …").
    fn reference(text: &str) -> Result<Details, String> {
        serde_json::from_str::<Tagged>(text)
            .map(Details::from)
            .map_err(|error| error.to_string().replace("enum Tagged", "enum Details"))
    }

    fn ours(text: &str) -> Result<Details, String> {
        serde_json::from_str::<Details>(text).map_err(|error| error.to_string())
    }

    #[test]
    fn every_variant_reads_back_the_fast_way_and_the_slow_way_alike() {
        for details in every_variant() {
            let text = serde_json::to_string(&details).expect("serialize");
            assert!(text.starts_with("{\"type\":"), "{text}");
            assert_eq!(ours(&text), Ok(details.clone()), "{text}");
            assert_eq!(reference(&text), Ok(details.clone()), "{text}");
            // Through a Value: the keys sorted, the tag rarely first.
            let value = serde_json::to_value(&details).expect("to value");
            assert_eq!(
                serde_json::from_value::<Details>(value.clone()).expect("from value"),
                details
            );
            // The tag last, in text.
            let mut object = value.as_object().expect("an object").clone();
            let tag = object.remove("type").expect("tagged");
            let mut moved = serde_json::to_string(&object).expect("text");
            moved.truncate(moved.len() - 1);
            let tag_last = if object.is_empty() {
                format!("{{\"type\":{tag}}}")
            } else {
                format!("{moved},\"type\":{tag}}}")
            };
            assert_eq!(ours(&tag_last), Ok(details.clone()), "{tag_last}");
        }
    }

    #[test]
    fn wrong_input_is_refused_as_the_derived_deserializer_refuses_it() {
        for text in [
            r#"{}"#,
            r#"{"type":"nonsense"}"#,
            r#"{"balances":[],"type":"nonsense"}"#,
            r#"{"type":"balance"}"#,
            r#"{"type":"balance","balances":"many"}"#,
            r#"{"type":"balance","balances":[{"name":"a"}]}"#,
            r#"{"type":"balance","balances":[],"type":"balance"}"#,
            r#"{"type":"none","type":"none"}"#,
            r#"{"type":"payment_page","url":"u","type":"report"}"#,
            r#"{"type":7}"#,
            r#"{"type":3,"balances":[]}"#,
            r#"{"type":"Balance","balances":[]}"#,
            r#"{"type":null}"#,
            r#"{"type":"payment_page"}"#,
            r#"{"type":"report","records":[{"amount":"7.00"}]}"#,
            r#""balance""#,
            r#"7"#,
            r#"null"#,
            r#"[]"#,
            r#"["balance",[]]"#,
            r#"{"type":"balance","balances":[]"#,
            r#"{"type":"#,
        ] {
            let (ours, reference) = (ours(text), reference(text));
            assert_eq!(
                ours.is_ok(),
                reference.is_ok(),
                "{text}: ours {ours:?}, derived {reference:?}"
            );
            if let (Err(ours), Err(reference)) = (&ours, &reference) {
                // The same complaint; positions may differ by where each stopped reading.
                let what =
                    |message: &str| message.split(" at line ").next().unwrap_or("").to_string();
                assert_eq!(what(ours), what(reference), "{text}");
            } else {
                assert_eq!(ours, reference, "{text}");
            }
        }
    }

    #[test]
    fn extra_fields_are_ignored_as_the_derived_deserializer_ignores_them() {
        for text in [
            r#"{"type":"none","later":1}"#,
            r#"{"type":"balance","balances":[],"note":{"deep":[1,2]}}"#,
            r#"{"type":"transaction","raw":null,"unknown":true}"#,
        ] {
            assert_eq!(ours(text), reference(text), "{text}");
            assert!(ours(text).is_ok(), "{text}");
        }
    }
}
