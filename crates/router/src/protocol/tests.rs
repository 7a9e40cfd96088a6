//! Raw-byte tests of the startup protocol: what real clients send, and what broken ones do.

use super::*;

/// A StartupMessage as libpq would send it (length word included).
fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = PROTOCOL_V3.to_be_bytes().to_vec();
    for (name, value) in params {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Parse a whole packet (length word included) as the router does.
fn parse(packet: &[u8]) -> Result<FirstPacket, ProtocolError> {
    let header: [u8; 4] = packet[..4].try_into().expect("4 bytes");
    let len = startup_body_length(header)?;
    assert_eq!(len, packet.len() - 4, "length word matches the packet");
    parse_first_packet(&packet[4..])
}

fn startup_of(packet: &[u8]) -> StartupMessage {
    match parse(packet) {
        Ok(FirstPacket::Startup(m)) => m,
        other => panic!("expected a startup message, got {other:?}"),
    }
}

#[test]
fn ssl_and_gssenc_requests() {
    let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    assert_eq!(parse(&ssl), Ok(FirstPacket::SslRequest));
    let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    assert_eq!(parse(&gss), Ok(FirstPacket::GssEncRequest));
}

#[test]
fn cancel_request_round_trips() {
    let key = CancelKey {
        pid: 4242,
        secret: -7,
    };
    let packet = cancel_request(key);
    assert_eq!(packet.len(), 16);
    assert_eq!(&packet[..8], &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]);
    assert_eq!(parse(&packet), Ok(FirstPacket::Cancel(key)));
    // A cancel request with a missing secret is malformed.
    assert!(matches!(
        parse_first_packet(&packet[4..12]),
        Err(ProtocolError::Malformed { .. })
    ));
}

#[test]
fn startup_parameters_are_parsed_and_reencoded_byte_for_byte() {
    let packet = startup(&[
        ("user", "app"),
        ("database", "shop"),
        ("application_name", "psql"),
    ]);
    let message = startup_of(&packet);
    assert_eq!(message.user(), "app");
    assert_eq!(message.param("database"), Some(&b"shop"[..]));
    assert_eq!(message.encode(), packet);
}

#[test]
fn target_option_is_stripped_and_other_options_kept() {
    let packet = startup(&[
        ("user", "app"),
        (
            "options",
            "-c statement_timeout=5s -c pgbaton.target=read --search_path=a\\ b",
        ),
    ]);
    let mut message = startup_of(&packet);
    assert_eq!(message.take_target(), Ok(Some(Target::Read)));
    assert_eq!(
        message.param("options"),
        Some(&b"-c statement_timeout=5s --search_path=a\\ b"[..])
    );
    let expected = startup(&[
        ("user", "app"),
        ("options", "-c statement_timeout=5s --search_path=a\\ b"),
    ]);
    assert_eq!(message.encode(), expected);
}

#[test]
fn target_option_forms() {
    for (options, target) in [
        ("-cpgbaton.target=write", Target::Write),
        ("--pgbaton.target=any", Target::Any),
        ("-c PGBATON.TARGET=read", Target::Read),
    ] {
        let mut message = startup_of(&startup(&[("user", "u"), ("options", options)]));
        assert_eq!(message.take_target(), Ok(Some(target)), "{options}");
        // Nothing else was in options: the parameter is dropped entirely.
        assert_eq!(message.param("options"), None, "{options}");
        assert_eq!(message.encode(), startup(&[("user", "u")]));
    }
}

#[test]
fn target_session_attrs_is_removed_and_mapped() {
    for (value, target) in [
        ("read-write", Target::Write),
        ("primary", Target::Write),
        ("read-only", Target::Read),
        ("standby", Target::Read),
        ("prefer-standby", Target::Read),
        ("any", Target::Any),
    ] {
        let mut message = startup_of(&startup(&[("user", "u"), ("target_session_attrs", value)]));
        assert_eq!(message.take_target(), Ok(Some(target)), "{value}");
        assert_eq!(message.encode(), startup(&[("user", "u")]));
    }
    // The option wins over target_session_attrs.
    let mut message = startup_of(&startup(&[
        ("target_session_attrs", "read-write"),
        ("options", "-c pgbaton.target=read"),
    ]));
    assert_eq!(message.take_target(), Ok(Some(Target::Read)));
}

#[test]
fn no_routing_request_leaves_the_message_alone() {
    let packet = startup(&[("user", "u"), ("options", "-c work_mem=64MB")]);
    let mut message = startup_of(&packet);
    assert_eq!(message.take_target(), Ok(None));
    assert_eq!(message.encode(), packet);
}

#[test]
fn bad_target_values_are_rejected_with_the_parameter_named() {
    let mut message = startup_of(&startup(&[("options", "-c pgbaton.target=sideways")]));
    let err = message.take_target().expect_err("bad value");
    assert!(err.to_string().contains("pgbaton.target"), "{err}");
    let mut message = startup_of(&startup(&[("target_session_attrs", "nope")]));
    let err = message.take_target().expect_err("bad value");
    assert!(err.to_string().contains("target_session_attrs"), "{err}");
}

#[test]
fn truncated_and_oversized_packets_are_rejected() {
    // Length word says 3 (less than itself + code).
    assert!(matches!(
        startup_body_length([0, 0, 0, 3]),
        Err(ProtocolError::BadLength { .. })
    ));
    // Oversized: 1 GB.
    assert!(matches!(
        startup_body_length([0x40, 0, 0, 0]),
        Err(ProtocolError::BadLength { .. })
    ));
    // Parameters without the final NUL.
    let mut packet = startup(&[("user", "u")]);
    packet.pop();
    assert!(matches!(
        parse_first_packet(&packet[4..]),
        Err(ProtocolError::Malformed { .. })
    ));
    // A name without a value.
    let mut body = PROTOCOL_V3.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0");
    assert!(parse_first_packet(&body).is_err());
    // Protocol 2 and HTTP are refused.
    assert!(matches!(
        parse_first_packet(&[0, 2, 0, 0, 0]),
        Err(ProtocolError::UnsupportedVersion { major: 2, .. })
    ));
    assert!(parse_first_packet(b"GET / HTTP/1.1").is_err());
}

#[test]
fn error_response_layout() {
    let bytes = error_response("57P03", "no leader");
    assert_eq!(bytes[0], b'E');
    let length = u32::from_be_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize;
    assert_eq!(length, bytes.len() - 1);
    assert_eq!(*bytes.last().expect("terminator"), 0);
    let text = String::from_utf8_lossy(&bytes[5..]);
    assert!(
        text.contains("SFATAL\0") && text.contains("C57P03\0") && text.contains("Mno leader\0")
    );
}

#[test]
fn backend_messages() {
    assert_eq!(auth_code(&[0, 0, 0, 0]), Some(0));
    assert_eq!(auth_code(&[0, 0, 0, 10, b'S']), Some(10));
    assert_eq!(
        parameter_status(b"in_hot_standby\0on\0"),
        Some((&b"in_hot_standby"[..], &b"on"[..]))
    );
    assert_eq!(parameter_status(b"broken"), None);
    assert_eq!(
        backend_key(&[0, 0, 0, 5, 0, 0, 0, 9]),
        Some(CancelKey { pid: 5, secret: 9 })
    );
    assert_eq!(message_body_length([0, 0, 0, 4], 100), Ok(0));
    assert!(message_body_length([0, 0, 0, 2], 100).is_err());
    assert!(message_body_length([0, 1, 0, 0], 100).is_err());
}
