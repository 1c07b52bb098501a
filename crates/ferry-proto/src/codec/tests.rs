use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::envelope::{ClientInfo, Publication};

fn mp(value: &JsonValue) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("encode")
}

fn packed(value: &MpValue) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).expect("encode");
    bytes
}

fn publish_frame(id: MpValue, data: MpValue) -> Vec<u8> {
    packed(&MpValue::Map(vec![
        ("type".into(), "publish".into()),
        ("id".into(), id),
        (
            "payload".into(),
            MpValue::Map(vec![
                ("channel".into(), "chat:x".into()),
                ("data".into(), data),
            ]),
        ),
    ]))
}

#[test]
fn a_msgpack_publish_keeps_binary_data_as_msgpack() {
    let bytes = publish_frame(7.into(), MpValue::Binary(vec![1, 2, 3]));
    let parsed = Codec::MsgPack.decode(&bytes).expect("valid");
    assert_eq!(parsed.id.as_ref().map(FrameId::json), Some("7"));
    let Command::Publish(p) = parsed.command else {
        panic!("not a publish")
    };
    assert_eq!(p.channel, "chat:x");
    assert_eq!(&*p.data.to_msgpack(), &[0xc4, 3, 1, 2, 3]);
    assert_eq!(p.data.to_json().get(), r#""AQID""#);
    // The reply echoes the id as the integer it was.
    let reply = Codec::MsgPack.reply(parsed.id.as_ref().expect("id"), json!({"offset": 1}));
    let back = Codec::MsgPack.frame_to_json(&reply).expect("decodes");
    assert_eq!(
        back,
        json!({"type": "reply", "id": 7, "payload": {"offset": 1}})
    );
}

#[test]
fn msgpack_errors_are_values_with_the_id_when_readable() {
    for bad in [
        vec![],
        vec![0xc1],
        vec![0x81, 0xa4, b't', b'y', b'p', b'e'],
        vec![0x91; 300],
    ] {
        let e = Codec::MsgPack.decode(&bad).expect_err("refused");
        assert!(e.error.message.contains("malformed"), "{}", e.error.message);
    }
    let unknown = mp(&json!({"type": "teleport", "id": "a"}));
    let e = Codec::MsgPack.decode(&unknown).expect_err("unknown type");
    assert_eq!(e.id.as_ref().map(FrameId::json), Some(r#""a""#));
    let ext = publish_frame("x".into(), MpValue::Ext(3, vec![0]));
    let e = Codec::MsgPack.decode(&ext).expect_err("ext data");
    assert_eq!(e.id.as_ref().map(FrameId::json), Some(r#""x""#));
    assert!(e.error.message.contains("extension"), "{}", e.error.message);
    let e = Codec::Json.decode(&[0xff, 0xfe]).expect_err("not UTF-8");
    assert!(e.error.message.contains("UTF-8"));
}

#[test]
fn a_batch_keeps_each_publish_data() {
    let frame = mp(
        &json!({"type": "batch", "id": "b", "payload": {"commands": [
            {"type": "publish", "id": "p1", "payload": {"channel": "c", "data": {"k": [1, 2]}}},
            {"type": "ping", "id": "p2"},
            {"type": "publish", "id": "p3", "payload": {"channel": "c", "data": "s"}},
        ]}}),
    );
    let parsed = Codec::MsgPack.decode(&frame).expect("valid");
    let Command::Batch(frames) = parsed.command else {
        panic!("not a batch")
    };
    let data: Vec<String> = frames
        .iter()
        .filter_map(|f| match &f.as_ref().expect("ok").command {
            Command::Publish(p) => Some(p.data.to_json().get().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(data, vec![r#"{"k":[1,2]}"#.to_owned(), r#""s""#.to_owned()]);
}

/// Any JSON value (the floats are ones that print and parse back exactly).
fn json_value() -> impl Strategy<Value = JsonValue> {
    let leaf = prop_oneof![
        Just(JsonValue::Null),
        any::<bool>().prop_map(JsonValue::Bool),
        any::<i64>().prop_map(JsonValue::from),
        any::<u64>().prop_map(JsonValue::from),
        (-1e9f64..1e9).prop_map(JsonValue::from),
        ".{0,12}".prop_map(JsonValue::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(JsonValue::Array),
            prop::collection::btree_map("[a-z]{0,6}", inner, 0..6)
                .prop_map(|m| JsonValue::Object(m.into_iter().collect())),
        ]
    })
}

fn command() -> impl Strategy<Value = JsonValue> {
    let channel = "[a-z]{1,8}:[a-z0-9]{1,8}";
    prop_oneof![
        ".{1,20}".prop_map(|t| json!({"type": "auth", "payload": {"token": t}})),
        (channel, any::<bool>(), any::<u64>(), "[a-z0-9]{1,8}").prop_map(|(c, r, o, e)| {
            json!({"type": "subscribe", "payload": {"channel": c, "recover": r, "offset": o, "epoch": e}})
        }),
        channel.prop_map(|c| json!({"type": "unsubscribe", "payload": {"channel": c}})),
        (channel, json_value(), any::<bool>()).prop_map(|(c, d, s)| {
            json!({"type": "publish", "payload": {"channel": c, "data": d, "skip_self": s}})
        }),
        (channel, any::<Option<u64>>(), 0usize..500, any::<bool>()).prop_map(|(c, s, l, r)| {
            json!({"type": "history", "payload": {"channel": c, "since": s, "limit": l, "reverse": r}})
        }),
        channel.prop_map(|c| json!({"type": "presence", "payload": {"channel": c}})),
        Just(json!({"type": "ping"})),
    ]
}

/// What a parsed command says, in one comparable form.
fn meaning(frame: &Frame) -> String {
    let id = frame
        .id
        .as_ref()
        .map(FrameId::json)
        .unwrap_or("-")
        .to_owned();
    let command = match &frame.command {
        Command::Auth(a) => format!("auth {}", a.token),
        Command::Subscribe(s) => format!("{s:?}"),
        Command::Unsubscribe(c) => format!("unsub {}", c.channel),
        Command::Publish(p) => format!(
            "pub {} {} {}",
            p.channel,
            p.data.to_json_value(),
            p.skip_self
        ),
        Command::History(h) => format!("{h:?}"),
        Command::Presence(c) => format!("presence {}", c.channel),
        Command::Ping => "ping".into(),
        Command::Batch(frames) => format!("batch {}", frames.len()),
    };
    format!("{id} {command}")
}

fn id() -> impl Strategy<Value = Option<JsonValue>> {
    prop_oneof![
        Just(None),
        "[a-z0-9]{1,8}".prop_map(|s| Some(json!(s))),
        any::<u32>().prop_map(|n| Some(json!(n))),
    ]
}

proptest! {
    /// Every command decodes to the same typed command from either codec.
    #[test]
    fn every_command_means_the_same_in_both_codecs(mut cmd in command(), id in id()) {
        if let Some(id) = id {
            cmd["id"] = id;
        }
        let from_json = Codec::Json.decode(cmd.to_string().as_bytes()).expect("json");
        let from_msgpack = Codec::MsgPack.decode(&mp(&cmd)).expect("msgpack");
        prop_assert_eq!(meaning(&from_json), meaning(&from_msgpack));
        // And the answer to it carries the id back in each codec as it was sent.
        if let Some(id) = &from_json.id {
            for codec in Codec::ALL {
                let reply = codec.frame_to_json(&codec.reply(id, json!({}))).expect("reply");
                prop_assert_eq!(&reply["id"], &cmd["id"]);
            }
        }
    }

    /// A publication published in one codec and read in the other carries the same value.
    #[test]
    fn publications_cross_codecs_with_the_same_value(data in json_value(), offset in any::<u64>()) {
        let json_data = Data::from(serde_json::value::to_raw_value(&data).expect("raw"));
        let msgpack_data = Data::from_msgpack(&json_data.to_msgpack()).expect("converts");
        prop_assert_eq!(msgpack_data.to_json_value(), data.clone());
        for published in [json_data, msgpack_data] {
            let publication = Publication {
                channel: "c:x".into(),
                offset,
                epoch: "e".into(),
                data: published,
                info: Some(ClientInfo { user: "u".into(), client: "c".into() }),
                time: 5,
            };
            for codec in Codec::ALL {
                let frame = codec.push("message", &publication);
                let read = codec.frame_to_json(&frame).expect("decodes");
                prop_assert_eq!(&read["payload"]["data"], &data);
                prop_assert_eq!(&read["payload"]["offset"], &json!(offset));
                prop_assert_eq!(&read["type"], "message");
                if codec == Codec::MsgPack {
                    let typed: Publication =
                        rmp_serde::from_slice(&rmp_serde::to_vec_named(&publication).expect("enc"))
                            .expect("the client's type reads a msgpack payload");
                    prop_assert_eq!(typed.data.to_json_value(), data.clone());
                }
            }
        }
    }
}
