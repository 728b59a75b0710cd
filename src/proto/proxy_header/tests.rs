//! Tests of the PROXY header parser and encoders: whole and byte-by-byte parsing of v1
//! and v2 (TCP4, TCP6, LOCAL, UNKNOWN/UNSPEC, TLVs), round trips, malformed, truncated
//! and oversized input, and a proptest that random bytes never panic or over-ask.

use super::*;
use proptest::prelude::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Parses `header` followed by a payload whole, then every strict prefix of the header
/// (each must be `NeedMore`), and checks `consumed` and that the payload is untouched.
fn parse_whole_and_bytewise(header: &[u8]) -> ProxyHeader {
    let payload = b"GET / HTTP/1.1\r\n\r\n";
    let mut input = header.to_vec();
    input.extend_from_slice(payload);
    for n in 0..header.len() {
        assert_eq!(parse(&input[..n]), Ok(Parsed::NeedMore), "prefix of {n} bytes");
    }
    let Ok(Parsed::Done { header: h, consumed }) = parse(&input) else {
        panic!("not done: {:?}", parse(&input));
    };
    assert_eq!(consumed, header.len());
    assert_eq!(&input[consumed..], payload);
    let Ok(Parsed::Done { header: exact, consumed: c2 }) = parse(header) else { panic!("exact") };
    assert_eq!((exact.clone(), c2), (h.clone(), consumed));
    h
}

#[test]
fn v1_tcp4_whole_and_bytewise() {
    let h = parse_whole_and_bytewise(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    assert_eq!(h.version, Version::V1);
    assert_eq!(h.command, Command::Proxy);
    assert_eq!(h.transport, Transport::Tcp4);
    assert_eq!(h.source, Some(sa("192.168.0.1:56324")));
    assert_eq!(h.destination, Some(sa("192.168.0.11:443")));
    assert!(h.tlvs.is_empty());
}

#[test]
fn v1_tcp6_whole_and_bytewise() {
    let h = parse_whole_and_bytewise(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
    assert_eq!(h.transport, Transport::Tcp6);
    assert_eq!(h.source, Some(sa("[2001:db8::1]:65535")));
    assert_eq!(h.destination, Some(sa("[::1]:0")));
}

#[test]
fn v1_unknown_whole_and_bytewise() {
    for line in [&b"PROXY UNKNOWN\r\n"[..], b"PROXY UNKNOWN ffff::1 ::2 1 2\r\n"] {
        let h = parse_whole_and_bytewise(line);
        assert_eq!(h.transport, Transport::Unknown);
        assert_eq!((h.source, h.destination), (None, None));
    }
}

#[test]
fn v1_longest_header_is_accepted() {
    let line = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(line.len(), V1_MAX_LEN);
    assert_eq!(parse_whole_and_bytewise(line).transport, Transport::Unknown);
    let tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(parse_whole_and_bytewise(tcp6).source.unwrap().port(), 65535);
}

#[test]
fn v1_without_crlf_within_107_bytes_fails() {
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(V1_MAX_LEN - 1, b'a');
    assert_eq!(parse(&line), Ok(Parsed::NeedMore));
    line.push(b'a');
    assert_eq!(parse(&line), Err(HeaderError::BadV1));
    // CR as the 107th byte: the LF would be the 108th.
    line[V1_MAX_LEN - 1] = b'\r';
    assert_eq!(parse(&line), Err(HeaderError::BadV1));
    line.push(b'\n');
    assert_eq!(parse(&line), Err(HeaderError::BadV1));
}

#[test]
fn v1_malformed_lines_fail() {
    let bad: &[(&[u8], HeaderError)] = &[
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", HeaderError::BadV1),
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", HeaderError::BadV1),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", HeaderError::BadV1),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", HeaderError::BadV1),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", HeaderError::BadV1),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", HeaderError::BadV1),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", HeaderError::BadV1),
        (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", HeaderError::BadV1),
        (b"PROXY \r\n", HeaderError::BadV1),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", HeaderError::BadAddress),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", HeaderError::BadAddress),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", HeaderError::BadAddress),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", HeaderError::BadAddress),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", HeaderError::BadAddress),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", HeaderError::BadAddress),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", HeaderError::BadAddress),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", HeaderError::BadAddress),
        (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", HeaderError::BadAddress),
        (b"PROXY TCP6 ::g ::1 1 2\r\n", HeaderError::BadAddress),
    ];
    for (input, want) in bad {
        assert_eq!(parse(input), Err(*want), "{}", String::from_utf8_lossy(input));
    }
    // A control byte fails at once, before any CRLF.
    assert_eq!(parse(b"PROXY TCP4 1.2.\x00"), Err(HeaderError::BadV1));
}

#[test]
fn non_header_input_fails_at_first_differing_byte() {
    assert_eq!(parse(b"G"), Err(HeaderError::Missing));
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(HeaderError::Missing));
    assert_eq!(parse(b"*1\r\n$4\r\nPING\r\n"), Err(HeaderError::Missing));
    assert_eq!(parse(b"PR"), Ok(Parsed::NeedMore));
    assert_eq!(parse(b"PRI * HTTP/2.0"), Err(HeaderError::BadSignature { at: 2 }));
    assert_eq!(parse(b"PROXY"), Ok(Parsed::NeedMore));
    assert_eq!(parse(b"PROXYTCP4"), Err(HeaderError::BadSignature { at: 5 }));
    assert_eq!(parse(b"\r\n\r\n\0\r\nQU"), Ok(Parsed::NeedMore));
    assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(HeaderError::BadSignature { at: 10 }));
    assert_eq!(parse(b"\r\n\r\nGET"), Err(HeaderError::BadSignature { at: 4 }));
    assert_eq!(parse(b"\r\r"), Err(HeaderError::BadSignature { at: 1 }));
}

#[test]
fn v2_tcp4_whole_and_bytewise() {
    let bytes = encode_v2(sa("10.0.0.1:1234"), sa("10.0.0.2:6379"));
    assert_eq!(bytes.len(), 16 + 12);
    assert_eq!(&bytes[12..16], &[0x21, 0x11, 0, 12]);
    let h = parse_whole_and_bytewise(&bytes);
    assert_eq!(h.version, Version::V2);
    assert_eq!(h.command, Command::Proxy);
    assert_eq!(h.transport, Transport::Tcp4);
    assert_eq!(h.source, Some(sa("10.0.0.1:1234")));
    assert_eq!(h.destination, Some(sa("10.0.0.2:6379")));
}

#[test]
fn v2_tcp6_whole_and_bytewise() {
    let bytes = encode_v2(sa("[2001:db8::7]:40000"), sa("[fe80::1]:80"));
    assert_eq!(&bytes[12..16], &[0x21, 0x21, 0, 36]);
    let h = parse_whole_and_bytewise(&bytes);
    assert_eq!(h.transport, Transport::Tcp6);
    assert_eq!(h.source, Some(sa("[2001:db8::7]:40000")));
    assert_eq!(h.destination, Some(sa("[fe80::1]:80")));
}

#[test]
fn v2_local_whole_and_bytewise() {
    let bytes = encode_v2_local();
    assert_eq!(bytes.len(), 16);
    assert_eq!(&bytes[12..16], &[0x20, 0x00, 0, 0]);
    let h = parse_whole_and_bytewise(&bytes);
    assert_eq!(h.command, Command::Local);
    assert_eq!(h.transport, Transport::Unspec);
    assert_eq!((h.source, h.destination), (None, None));
}

#[test]
fn v2_local_with_inet_family_ignores_addresses() {
    let mut bytes = encode_v2(sa("1.2.3.4:5"), sa("6.7.8.9:10"));
    bytes[12] = 0x20;
    let h = parse_whole_and_bytewise(&bytes);
    assert_eq!(h.command, Command::Local);
    assert_eq!(h.transport, Transport::Tcp4);
    assert_eq!((h.source, h.destination), (None, None));
}

#[test]
fn v2_with_tlvs_whole_and_bytewise() {
    let tlvs: &[(u8, &[u8])] =
        &[(0x01, b"h2"), (0x02, b"example.com"), (0x04, b""), (0xE0, &[7; 300])];
    let bytes = encode_v2_with_tlvs(sa("1.2.3.4:5"), sa("6.7.8.9:10"), tlvs);
    let h = parse_whole_and_bytewise(&bytes);
    assert_eq!(h.source, Some(sa("1.2.3.4:5")));
    assert_eq!(h.tlvs.len(), tlvs.len());
    for (got, (kind, value)) in h.tlvs.iter().zip(tlvs) {
        assert_eq!(got.kind, *kind);
        assert_eq!(got.value(&bytes), *value);
    }
}

#[test]
fn v2_unspec_proxy_has_no_addresses_and_keeps_tlvs() {
    let bytes = encode_v2_raw(0x21, 0x00, &[], &[(0x05, b"id")]);
    let h = parse_whole_and_bytewise(&bytes);
    assert_eq!((h.command, h.transport), (Command::Proxy, Transport::Unspec));
    assert_eq!(h.source, None);
    assert_eq!(h.tlvs[0].value(&bytes), b"id");
}

#[test]
fn v2_udp_and_unix_are_recognised() {
    let mut udp = encode_v2(sa("1.2.3.4:5"), sa("6.7.8.9:10"));
    udp[13] = 0x12;
    let h = parse_whole_and_bytewise(&udp);
    assert_eq!(h.transport, Transport::Udp4);
    assert_eq!(h.source, Some(sa("1.2.3.4:5")));
    let mut udp6 = encode_v2(sa("[::1]:5"), sa("[::2]:10"));
    udp6[13] = 0x22;
    assert_eq!(parse_whole_and_bytewise(&udp6).transport, Transport::Udp6);
    for (fam, want) in [(0x31, Transport::UnixStream), (0x32, Transport::UnixDgram)] {
        let unix = encode_v2_raw(0x21, fam, &[b'/'; 216], &[]);
        let h = parse_whole_and_bytewise(&unix);
        assert_eq!(h.transport, want);
        assert_eq!((h.source, h.destination), (None, None));
    }
}

#[test]
fn v2_bad_version_command_family_fail_early() {
    let good = encode_v2(sa("1.2.3.4:5"), sa("6.7.8.9:10"));
    let mut b = good.clone();
    b[12] = 0x11;
    assert_eq!(parse(&b[..13]), Err(HeaderError::UnsupportedVersion(1)));
    b[12] = 0x22;
    assert_eq!(parse(&b[..13]), Err(HeaderError::UnsupportedCommand(2)));
    let mut b = good.clone();
    for fam in [0x01, 0x13, 0x23, 0x30, 0x41, 0x10] {
        b[13] = fam;
        assert_eq!(parse(&b[..14]), Err(HeaderError::UnsupportedFamily(fam)));
    }
}

#[test]
fn v2_length_shorter_than_address_block_fails() {
    let mut b = encode_v2(sa("[::1]:1"), sa("[::2]:2"));
    b[15] = 35;
    assert_eq!(parse(&b[..16]), Err(HeaderError::AddressBlockTooShort));
    let mut b = encode_v2(sa("1.1.1.1:1"), sa("2.2.2.2:2"));
    b[15] = 11;
    assert_eq!(parse(&b), Err(HeaderError::AddressBlockTooShort));
    b[13] = 0x21; // TCP6 with a 12-byte IPv4 block
    b[15] = 12;
    assert_eq!(parse(&b), Err(HeaderError::AddressBlockTooShort));
}

#[test]
fn v2_tlv_overrun_fails() {
    let good = encode_v2_with_tlvs(sa("1.2.3.4:5"), sa("6.7.8.9:10"), &[(1, b"abcd")]);
    // TLV declares 5 bytes of value but only 4 remain.
    let mut b = good.clone();
    b[16 + 12 + 2] = 5;
    assert_eq!(parse(&b), Err(HeaderError::TlvOverrun));
    // A header length that cuts a TLV's 3-byte head.
    let mut b = good[..16 + 12 + 2].to_vec();
    b[15] = 14;
    assert_eq!(parse(&b), Err(HeaderError::TlvOverrun));
    // A huge TLV length.
    let mut b = good.clone();
    b[16 + 12 + 1] = 0xff;
    assert_eq!(parse(&b), Err(HeaderError::TlvOverrun));
}

#[test]
fn v2_oversized_is_rejected_at_the_fixed_part() {
    let big = encode_v2_with_tlvs(sa("1.2.3.4:5"), sa("6.7.8.9:10"), &[(0xE0, &[0; 5000])]);
    assert_eq!(
        parse(&big[..16]),
        Err(HeaderError::TooLarge { len: big.len(), max: V2_DEFAULT_MAX_LEN })
    );
    assert_eq!(parse_with_limit(&big[..16], 65_536 + 16), Ok(Parsed::NeedMore));
    assert!(
        matches!(parse_with_limit(&big, 65_536 + 16), Ok(Parsed::Done { consumed, .. }) if consumed == big.len())
    );
    let small = encode_v2(sa("1.2.3.4:5"), sa("6.7.8.9:10"));
    assert!(matches!(parse_with_limit(&small, 28), Ok(Parsed::Done { .. })));
    assert_eq!(parse_with_limit(&small, 27), Err(HeaderError::TooLarge { len: 28, max: 27 }));
}

#[test]
fn v2_truncated_needs_more_until_complete() {
    let b = encode_v2_with_tlvs(sa("[::1]:1"), sa("[::2]:2"), &[(1, b"x")]);
    for n in 0..b.len() {
        assert_eq!(parse(&b[..n]), Ok(Parsed::NeedMore));
    }
}

#[test]
fn round_trips_encode_parse() {
    let pairs = [
        ("1.2.3.4:1", "5.6.7.8:65535"),
        ("[::1]:0", "[2001:db8::1]:443"),
        ("[::ffff:1.2.3.4]:9", "[::ffff:5.6.7.8]:10"),
    ];
    for (s, d) in pairs {
        let (s, d) = (sa(s), sa(d));
        for bytes in [encode_v1(s, d), encode_v2(s, d)] {
            let Ok(Parsed::Done { header, consumed }) = parse(&bytes) else { panic!() };
            assert_eq!(consumed, bytes.len());
            assert_eq!((header.source, header.destination), (Some(s), Some(d)));
        }
    }
    // Mixed families: sent as TCP6 with the IPv4 address mapped.
    let (s, d) = (sa("1.2.3.4:1"), sa("[::1]:2"));
    let mapped = sa("[::ffff:1.2.3.4]:1");
    assert_eq!(encode_v1(s, d), b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n");
    for bytes in [encode_v1(s, d), encode_v2(s, d)] {
        let Ok(Parsed::Done { header, .. }) = parse(&bytes) else { panic!() };
        assert_eq!(header.transport, Transport::Tcp6);
        assert_eq!((header.source, header.destination), (Some(mapped), Some(d)));
    }
    assert_eq!(encode_v1_unknown(), b"PROXY UNKNOWN\r\n");
}

#[test]
fn errors_display_and_kind() {
    let e = HeaderError::TooLarge { len: 5000, max: 4096 };
    assert_eq!(e.to_string(), "PROXY v2 header of 5000 bytes exceeds the limit of 4096");
    assert_eq!(e.kind(), "proxy_too_large");
    assert_eq!(HeaderError::Missing.to_string(), "no PROXY protocol header");
}

/// The longest input [`parse_with_limit`] may answer `NeedMore` for.
fn need_more_bound(input: &[u8], max: usize) -> usize {
    if input.first() == Some(&b'P') {
        V1_MAX_LEN - 1
    } else if input.len() >= 16 {
        (16 + usize::from(u16::from_be_bytes([input[14], input[15]])))
            .min(max)
            .saturating_sub(1)
            .max(15)
    } else {
        15
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic_or_over_ask(
        prefix in 0usize..4,
        body in proptest::collection::vec(any::<u8>(), 0..400),
        max in 0usize..600,
    ) {
        let mut input = match prefix {
            0 => Vec::new(),
            1 => b"PROXY ".to_vec(),
            2 => V2_SIGNATURE.to_vec(),
            _ => { let mut v = V2_SIGNATURE.to_vec(); v.extend_from_slice(&[0x21, 0x11]); v }
        };
        input.extend_from_slice(&body);
        for n in 0..=input.len() {
            match parse_with_limit(&input[..n], max) {
                Ok(Parsed::NeedMore) => prop_assert!(n <= need_more_bound(&input[..n], max)),
                Ok(Parsed::Done { consumed, .. }) => prop_assert!(consumed <= n),
                Err(e) => { let _ = e.to_string(); }
            }
        }
    }
}
