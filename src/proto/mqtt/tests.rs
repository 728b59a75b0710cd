//! Codec tests: every packet type round-trips, decoding split at every byte, malformed
//! inputs, topic rules, and random bytes never panic.

use proptest::prelude::*;

use super::topic::{matches, valid_filter, valid_name};
use super::*;

fn limits() -> Limits {
    Limits::default()
}

fn all_packets() -> Vec<Packet> {
    vec![
        Packet::Connect(Connect {
            protocol: "MQTT".into(),
            level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: "dev-1".into(),
            will: Some(Will {
                topic: "w/t".into(),
                payload: b"bye".to_vec(),
                qos: 1,
                retain: true,
            }),
            username: Some("u".into()),
            password: Some(b"p".to_vec()),
        }),
        Packet::Connect(Connect {
            protocol: "MQIsdp".into(),
            level: 3,
            clean_session: false,
            keep_alive: 0,
            client_id: "old".into(),
            will: None,
            username: None,
            password: None,
        }),
        Packet::ConnAck { session_present: true, code: 0 },
        Packet::Publish(Publish {
            dup: false,
            qos: 0,
            retain: true,
            topic: "a/b".into(),
            pid: None,
            payload: vec![1, 2, 3],
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: 1,
            retain: false,
            topic: "a".into(),
            pid: Some(7),
            payload: vec![0; 300],
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: 2,
            retain: false,
            topic: "x/y/z".into(),
            pid: Some(65535),
            payload: Vec::new(),
        }),
        Packet::PubAck(1),
        Packet::PubRec(2),
        Packet::PubRel(3),
        Packet::PubComp(4),
        Packet::Subscribe { pid: 5, filters: vec![("a/+".into(), 1), ("#".into(), 0)] },
        Packet::SubAck { pid: 5, codes: vec![1, 0, SUBACK_FAILURE] },
        Packet::Unsubscribe { pid: 6, filters: vec!["a/+".into()] },
        Packet::UnsubAck(6),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect,
    ]
}

#[test]
fn every_packet_round_trips() {
    for p in all_packets() {
        let mut b = Vec::new();
        p.encode(&mut b);
        assert_eq!(decode(&b, &limits()), Ok(Some((p.clone(), b.len()))), "{p:?}");
    }
}

#[test]
fn split_at_every_byte() {
    let mut stream = Vec::new();
    let packets = all_packets();
    for p in &packets {
        p.encode(&mut stream);
    }
    for split in 0..=stream.len() {
        let mut got = Vec::new();
        let mut buf = Vec::new();
        for chunk in [&stream[..split], &stream[split..]] {
            buf.extend_from_slice(chunk);
            while let Some((p, n)) = decode(&buf, &limits()).expect("valid") {
                buf.drain(..n);
                got.push(p);
            }
        }
        assert_eq!(got, packets, "split at {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn remaining_length_encodings() {
    for n in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
        let mut b = Vec::new();
        put_header(&mut b, 0x30, n);
        let big = Limits { max_packet: usize::MAX, ..limits() };
        let (_, len, header) = fixed_header(&b, &big).expect("ok").expect("complete");
        assert_eq!((len, header), (n, b.len()));
    }
}

#[test]
fn malformed_inputs() {
    let l = limits();
    let bad: Vec<(&[u8], Error)> = vec![
        (&[0x30, 0xff, 0xff, 0xff, 0xff, 0], Error::BadRemainingLength),
        (&[0x00, 0], Error::ReservedType(0)),
        (&[0xf0, 0], Error::ReservedType(15)),
        (&[0x80, 3, 0, 1, 0], Error::ReservedFlags(0x80)),
        (&[0xc1, 0], Error::ReservedFlags(0xc1)),
        (&[0x60, 2, 0, 1], Error::ReservedFlags(0x60)),
        (&[0x36, 3, 0, 1, b'a'], Error::Malformed("publish qos 3")),
        (&[0x38, 3, 0, 1, b'a'], Error::Malformed("dup set on qos 0")),
        (&[0x40, 2, 0, 0], Error::Malformed("packet identifier 0")),
        (&[0x40, 3, 0, 1, 9], Error::Malformed("trailing bytes")),
        (&[0xc0, 1, 0], Error::Malformed("trailing bytes")),
        (&[0x82, 2, 0, 1], Error::Malformed("subscribe without filters")),
        (&[0x82, 6, 0, 1, 0, 1, b'a', 3], Error::Malformed("subscribe qos")),
        (&[0xa2, 2, 0, 1], Error::Malformed("unsubscribe without filters")),
        (&[0x30, 4, 0, 2, 0xff, 0xfe], Error::BadString),
        (&[0x30, 3, 0, 1, 0], Error::BadString),
        (&[0x30, 3, 0, 5, b'a'], Error::Malformed("truncated")),
        (
            &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 1, 0, 0, 0, 0],
            Error::Malformed("connect reserved flag"),
        ),
        (
            &[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x08, 0, 0, 0, 0],
            Error::Malformed("will qos/retain without will"),
        ),
    ];
    for (bytes, want) in bad {
        assert_eq!(decode(bytes, &l), Err(want.clone()), "{bytes:x?}");
    }
    let small = Limits { max_packet: 100, ..l };
    assert_eq!(decode(&[0x30, 0x80, 0x01], &small), Err(Error::TooLarge(131)));
    // Incomplete: more bytes needed, not an error.
    assert_eq!(decode(&[0x30], &l), Ok(None));
    assert_eq!(decode(&[0x30, 0x80], &l), Ok(None));
    assert_eq!(decode(&[0x30, 5, 0], &l), Ok(None));
}

#[test]
fn topic_rules() {
    let l = limits();
    for ok in ["a", "a/b", "/", "a//b", "$SYS/x"] {
        assert!(valid_name(ok, &l), "{ok}");
    }
    for bad in ["", "a/+", "#", "a#"] {
        assert!(!valid_name(bad, &l), "{bad}");
    }
    for ok in ["#", "+", "a/#", "+/+/c", "a/+/#", "/+"] {
        assert!(valid_filter(ok, &l), "{ok}");
    }
    for bad in ["", "a/#/b", "a#", "a+/b", "#/"] {
        assert!(!valid_filter(bad, &l), "{bad}");
    }
    let long = "a/".repeat(64) + "a";
    assert!(!valid_name(&long, &l), "too many levels");
    let cases = [
        ("a/+/c", "a/b/c", true),
        ("a/+/c", "a/b/d", false),
        ("a/#", "a", true),
        ("a/#", "a/b/c", true),
        ("#", "a/b", true),
        ("#", "$SYS/x", false),
        ("+/x", "$SYS/x", false),
        ("$SYS/#", "$SYS/x", true),
        ("+", "/", false),
        ("+/+", "/", true),
        ("a/b", "a/b/c", false),
    ];
    for (f, t, want) in cases {
        assert_eq!(matches(f, t), want, "{f} vs {t}");
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let l = Limits { max_packet: 1024, ..Limits::default() };
        let mut rest = &bytes[..];
        while let Ok(Some((_, n))) = decode(rest, &l) {
            prop_assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
        }
    }

    #[test]
    fn random_packet_bodies_never_panic(kind in 1u8..15, flags in 0u8..16, body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut b = Vec::new();
        put_header(&mut b, (kind << 4) | flags, body.len());
        b.extend_from_slice(&body);
        let _ = decode(&b, &Limits::default());
    }
}
