//! Property tests: whatever a frame holds, encoding it for a version and parsing the
//! bytes back with that version's rules gives the same frame, for every STOMP version
//! (within what the version can carry: 1.0 has no escapes, 1.1 no `\r` escape).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::{Command, Frame, Headers, Inbound, Limits, Parser, Version, encode};

/// Header text for `version`: 1.2 carries anything; 1.1 anything but CR; 1.0 (no
/// escapes) nothing that would end the line, nor `:` in a name.
fn text(version: Version, name: bool) -> BoxedStrategy<String> {
    let pattern = match (version, name) {
        (Version::V1_2, true) => "[a-z\\-:\\\\\\n\\r é]{1,8}",
        (Version::V1_2, false) => "[a-z\\-:\\\\\\n\\r é]{0,8}",
        (Version::V1_1, true) => "[a-z\\-:\\\\\\n é]{1,8}",
        (Version::V1_1, false) => "[a-z\\-:\\\\\\n é]{0,8}",
        (Version::V1_0, true) => "[a-z\\-\\\\ é]{1,8}",
        (Version::V1_0, false) => "[a-z\\-:\\\\ é]{0,8}",
    };
    let s = proptest::string::string_regex(pattern).expect("valid regex");
    if name {
        s.prop_filter("reserved", |n| n != "content-length").boxed()
    } else {
        s.boxed()
    }
}

fn frame(version: Version) -> impl Strategy<Value = Frame> {
    let command = prop_oneof![
        Just(Command::Send),
        Just(Command::Message),
        Just(Command::Error),
        Just(Command::Subscribe),
        Just(Command::Receipt),
    ];
    let headers = proptest::collection::vec((text(version, true), text(version, false)), 0..6);
    let body = proptest::collection::vec(any::<u8>(), 0..300);
    (command, headers, body).prop_map(|(command, headers, body)| {
        let body = if command.may_have_body() {
            Bytes::from(body)
        } else {
            Bytes::new()
        };
        let mut h = Headers::new();
        for (k, v) in headers {
            h.push(k, v);
        }
        Frame {
            command,
            headers: h,
            body,
        }
    })
}

fn round_trip(frame: &Frame, version: Version) -> Frame {
    let mut buf = BytesMut::new();
    encode(frame, version, &mut buf);
    let mut parser = Parser::new(Limits::default());
    parser.set_version(version);
    match parser.parse(&mut buf) {
        Ok(Some(Inbound::Frame(f))) => {
            assert!(buf.is_empty(), "bytes left over");
            f
        }
        other => panic!("{other:?} from {buf:?}"),
    }
}

fn expected(frame: &Frame) -> Frame {
    let mut want = frame.clone();
    if !want.body.is_empty() {
        want.headers
            .push("content-length", want.body.len().to_string());
    }
    want
}

proptest! {
    #[test]
    fn round_trips_in_1_2(f in frame(Version::V1_2)) {
        prop_assert_eq!(round_trip(&f, Version::V1_2), expected(&f));
    }

    #[test]
    fn round_trips_in_1_1(f in frame(Version::V1_1)) {
        prop_assert_eq!(round_trip(&f, Version::V1_1), expected(&f));
    }

    #[test]
    fn round_trips_in_1_0(f in frame(Version::V1_0)) {
        prop_assert_eq!(round_trip(&f, Version::V1_0), expected(&f));
    }
}
