//! Fuzz-style tests of the parsers that read what people and feeds send: list files, feeds in
//! every format, single entries and the daemon config. Seeded and bounded (a fixed number of
//! cases per seed, and a time budget), so a failure reproduces: the panic message names the seed
//! and case and shows the input.
//!
//! What must hold for every input, valid or not:
//! - no panic;
//! - an error names only lines that exist in the input, in order, and its message holds no
//!   character a terminal would act on;
//! - all or nothing: a list/feed is an error exactly when some line is bad (checked against an
//!   independent line-by-line oracle), and an `Ok` holds exactly the good lines' entries;
//! - nothing accepted has host bits set or is an IPv4-mapped IPv6 prefix, and every accepted
//!   entry round-trips through its printed form; an accepted IPv4 entry was written canonically
//!   (so no leading zeros got through).
//!
//! No root needed: these parsers never touch the kernel.

use std::{
    net::IpAddr,
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
    time::{Duration, Instant},
};

use groundzero::{
    parse_address, parse_entry, parse_list, text::check_text, EntryError, IpNet, ListFileError,
};
use groundzero_daemon::{
    config::{ConfigError, Validated},
    feeds::{parse_feed, FeedError, FeedFormat},
};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEEDS: [u64; 4] = [1, 7, 0x5eed, 20_261_201];
const CASES_PER_SEED: usize = 250;
/// Per parser: after MIN_CASES the loops stop at this budget rather than hog a shared machine
/// (a loaded CI box runs fewer cases, never none).
const BUDGET: Duration = Duration::from_secs(10);
const MIN_CASES: usize = 200;

/// Characters that trip parsers: line ends, BOM, signs, separators, zeros, controls, bidi, NBSP.
const TRAPS: &[char] = &[
    '\u{feff}', '\r', '\n', '\0', '0', '0', '/', '/', '+', '-', ':', '.', '#', ';', ' ', '\t',
    '\u{1b}', '\u{202e}', '\u{a0}', '\u{85}', '\u{2028}', 'f', 'x', '9', '3', '2',
];

fn v4_net(rng: &mut ChaCha8Rng) -> IpNet {
    let addr = IpAddr::from(rng.gen::<[u8; 4]>());
    IpNet::new(addr, rng.gen_range(0..=32))
        .expect("len <= 32")
        .trunc()
}

fn v6_net(rng: &mut ChaCha8Rng) -> IpNet {
    let mut octets = rng.gen::<[u8; 16]>();
    if rng.gen_bool(0.5) {
        octets[..6].copy_from_slice(&[0x20, 0x01, 0x00, 0x02, 0x00, 0x00]);
    }
    let net = IpNet::new(IpAddr::from(octets), rng.gen_range(0..=128))
        .expect("len <= 128")
        .trunc();
    match net {
        // Mapped prefixes are refused by design; keep the valid corpus valid.
        IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some() => v4_net(rng),
        _ => net,
    }
}

/// One valid line in the style of `format` (hosts without `/` are not valid Spamhaus lines).
fn valid_line(rng: &mut ChaCha8Rng, format: FeedFormat) -> String {
    let net = if rng.gen_bool(0.6) {
        v4_net(rng)
    } else {
        v6_net(rng)
    };
    let host = net.prefix_len() == net.max_prefix_len();
    let entry = if host && format != FeedFormat::Spamhaus && rng.gen_bool(0.5) {
        net.addr().to_string()
    } else {
        net.to_string()
    };
    match rng.gen_range(0..6) {
        0 => String::new(),
        1 => format!("# comment {}", rng.gen::<u16>()),
        2 if format == FeedFormat::Spamhaus => format!("{entry} ; SBL{}", rng.gen::<u16>()),
        3 => format!("  {entry}\t"),
        _ => entry,
    }
}

fn valid_text(rng: &mut ChaCha8Rng, format: FeedFormat) -> String {
    let n = rng.gen_range(1..30);
    let mut text: String = (0..n)
        .map(|_| valid_line(rng, format) + "\n")
        .collect::<Vec<_>>()
        .concat();
    if rng.gen_bool(0.2) {
        text.insert(0, '\u{feff}');
    }
    match rng.gen_range(0..4) {
        0 => text = text.replace('\n', "\r\n"),
        1 => text = text.replace('\n', "\r"),
        _ => {}
    }
    text
}

fn char_boundary(text: &str, rng: &mut ChaCha8Rng) -> usize {
    let mut at = rng.gen_range(0..=text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// A few random edits: insert a trap, delete a char, duplicate a slice, add a huge line.
fn mutate(mut text: String, rng: &mut ChaCha8Rng) -> String {
    for _ in 0..rng.gen_range(0..6) {
        let at = char_boundary(&text, rng);
        match rng.gen_range(0..10) {
            0..=4 => text.insert(at, *TRAPS.choose(rng).expect("non-empty")),
            5 | 6 => {
                if let Some(c) = text[at..].chars().next() {
                    text.replace_range(at..at + c.len_utf8(), "");
                }
            }
            7 => {
                let end = char_boundary(&text, rng).max(at);
                let copy = text[at..end].to_string();
                text.insert_str(end, &copy);
            }
            8 => {
                // Huge lines: mostly tens of kilobytes, now and then a megabyte.
                let len = if rng.gen_ratio(1, 50) {
                    1 << 20
                } else {
                    rng.gen_range(1000..20_000)
                };
                text.insert_str(at, &"1".repeat(len))
            }
            _ => text.insert_str(at, "010."),
        }
    }
    text
}

fn random_text(rng: &mut ChaCha8Rng) -> String {
    let bytes: Vec<u8> = (0..rng.gen_range(0..400)).map(|_| rng.gen()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Independent of `entry::numbered_lines`: normalise every line end to `\n` and split.
fn oracle_lines(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    lines
}

/// What a list/feed parse must return, line by line: the bad line numbers, or the good entries.
fn oracle(text: &str, comments: &[char], spamhaus: bool) -> (Vec<usize>, Vec<IpNet>) {
    let mut bad = Vec::new();
    let mut nets: Vec<IpNet> = Vec::new();
    for (i, line) in oracle_lines(text).iter().enumerate() {
        let content = line.split(comments).next().unwrap_or("");
        let content = content.trim_matches([' ', '\t']);
        if content.is_empty() {
            continue;
        }
        match parse_entry(content) {
            Ok(_) if spamhaus && !content.contains('/') => bad.push(i + 1),
            Ok(net) => {
                if !nets.contains(&net) {
                    nets.push(net)
                }
            }
            Err(_) => bad.push(i + 1),
        }
    }
    (bad, nets)
}

fn check_accepted(net: &IpNet, written: &str) {
    assert_eq!(net.trunc(), *net, "host bits in accepted {net}");
    if let IpNet::V6(v6) = net {
        assert!(
            v6.addr().to_ipv4_mapped().is_none(),
            "v4-mapped entry {net} accepted"
        );
    }
    assert_eq!(parse_entry(&net.to_string()).as_ref(), Ok(net));
    if let (IpNet::V4(v4), Some(w)) = (net, Some(written.trim_matches([' ', '\t']))) {
        // Dotted-quad text is unique once leading zeros are refused: the input was canonical.
        assert!(
            w == v4.to_string() || w == v4.addr().to_string(),
            "`{w}` accepted as {net}"
        );
    }
}

/// An error message must be safe for a terminal line by line (its own `\n`s are structure).
fn check_message(message: &str) {
    for line in message.split('\n') {
        if let Err(e) = check_text("message", line, usize::MAX) {
            panic!("unescaped text in error message: {e}: {line:?}");
        }
    }
}

fn check_list_error(err: &ListFileError, text: &str, expected_bad: &[usize]) {
    let numbers: Vec<usize> = err.errors.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, expected_bad, "bad lines differ from the oracle");
    let line_count = oracle_lines(text).len();
    assert!(numbers.iter().all(|&n| (1..=line_count).contains(&n)));
    check_message(&err.to_string());
}

fn show(text: &str) -> String {
    let cut: String = text.chars().take(300).collect();
    format!("{cut:?} ({} bytes)", text.len())
}

/// Runs `case` on inputs from `make` for every seed; a panic is re-raised with seed, case and input.
fn run_cases(name: &str, make: impl Fn(&mut ChaCha8Rng) -> String, case: impl Fn(&str)) {
    let started = Instant::now();
    let mut ran = 0;
    for seed in SEEDS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for i in 0..CASES_PER_SEED {
            if ran >= MIN_CASES && started.elapsed() > BUDGET {
                break;
            }
            let text = make(&mut rng);
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(&text))) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "{name}: seed {seed} case {i}: {why}\ninput: {}",
                    show(&text)
                );
            }
            ran += 1;
        }
    }
    eprintln!("{name}: {ran} cases in {:?}", started.elapsed());
}

fn list_or_feed_input(rng: &mut ChaCha8Rng, format: FeedFormat) -> String {
    match rng.gen_range(0..10) {
        0 => random_text(rng),
        1..=3 => valid_text(rng, format),
        _ => {
            let text = valid_text(rng, format);
            mutate(text, rng)
        }
    }
}

#[test]
fn list_files_are_all_or_nothing_and_never_widen() {
    run_cases(
        "parse_list",
        |rng| list_or_feed_input(rng, FeedFormat::Plain),
        |text| {
            let (bad, good) = oracle(text, &['#', ';'], false);
            match parse_list(text, "fuzz.txt") {
                Ok(nets) => {
                    assert!(bad.is_empty(), "accepted with bad lines {bad:?}");
                    assert_eq!(nets, good);
                    for net in &nets {
                        check_accepted(net, &net.to_string());
                    }
                }
                Err(err) => check_list_error(&err, text, &bad),
            }
        },
    );
}

#[test]
fn feeds_in_every_format_are_all_or_nothing_and_never_widen() {
    for (format, comments) in [
        (FeedFormat::Plain, &['#', ';'][..]),
        (FeedFormat::Spamhaus, &[';', '#'][..]),
        (FeedFormat::Firehol, &['#'][..]),
    ] {
        run_cases(
            &format!("parse_feed {format:?}"),
            |rng| list_or_feed_input(rng, format),
            |text| {
                let (bad, good) = oracle(text, comments, format == FeedFormat::Spamhaus);
                match parse_feed(text, format, "feed:fuzz") {
                    Ok(feed) => {
                        assert!(bad.is_empty(), "accepted with bad lines {bad:?}");
                        assert!(!feed.nets.is_empty(), "an empty feed was accepted");
                        assert_eq!(feed.nets, good);
                    }
                    Err(FeedError::Lines(err)) => check_list_error(&err, text, &bad),
                    Err(e @ FeedError::Empty { .. }) => {
                        assert!(bad.is_empty() && good.is_empty(), "{e}");
                        check_message(&e.to_string());
                    }
                    Err(e) => panic!("parse_feed returned a fetch error: {e}"),
                }
            },
        );
    }
}

#[test]
fn single_entries_round_trip_and_refuse_traps() {
    run_cases(
        "parse_entry",
        |rng| {
            let line = match rng.gen_range(0..3) {
                0 => v4_net(rng).to_string(),
                1 => v6_net(rng).to_string(),
                _ => v4_net(rng).addr().to_string(),
            };
            if rng.gen_bool(0.7) {
                mutate(line, rng)
            } else {
                line
            }
        },
        |input| match parse_entry(input) {
            Ok(net) => {
                check_accepted(&net, input);
                // The lookup parser agrees with the entry parser on hosts.
                if !input.contains('/') {
                    assert_eq!(parse_address(input), Ok(net.addr()));
                }
            }
            Err(e) => {
                check_message(&e.to_string());
                assert!(!e.to_string().contains('\n'));
                if !input.contains('/') {
                    if let Ok(addr) = parse_address(input) {
                        // Only the v4-mapped refusal differs between the two.
                        assert!(matches!(e, EntryError::V4Mapped { .. }), "{addr}: {e}");
                    }
                }
            }
        },
    );
}

const CONFIG: &str = include_str!("../../../deploy/groundzero.toml");
const CONFIG_EXTRA: &str = "\n[guard]\nprotected = [\"203.0.113.0/28\", \"2001:2::/48\"]\n\
    [ratelimit]\nrate = 100\nexempt = [\"198.18.0.0/15\", \"198.51.100.7\"]\nban_ttl = \"10m\"\n\
    [journey]\nfilter = \"udp port 7000\"\n[[feed]]\nname = \"local\"\nurl = \"/tmp/x\"\nrefresh = \"1h\"\n";

fn config_input(rng: &mut ChaCha8Rng) -> String {
    let base = if rng.gen_bool(0.5) {
        CONFIG.to_string()
    } else {
        // The sample already has [guard] and [ratelimit]; a second config fills in the
        // fields the sample leaves empty (exempt, a second protected prefix, a local feed).
        format!("interfaces = [\"eth0\"]\n{CONFIG_EXTRA}")
    };
    match rng.gen_range(0..10) {
        0 => random_text(rng),
        1 => base,
        _ => mutate(base, rng),
    }
}

#[test]
fn config_errors_name_real_lines_and_accepted_prefixes_are_exact() {
    run_cases("Validated::parse", config_input, |text| {
        let line_count = text.split('\n').count();
        match Validated::parse(text, Path::new("fuzz.toml")) {
            Ok(config) => {
                for net in config.protected.iter().chain(&config.rate_exempt) {
                    check_accepted(net, &net.to_string());
                }
            }
            Err(ConfigError::Invalid { line, .. }) => {
                assert!(
                    (1..=line_count).contains(&line),
                    "line {line} of {line_count}"
                );
            }
            Err(ConfigError::Syntax { message, .. }) => {
                // toml says "line N, column M"; N must exist.
                if let Some(n) = message
                    .split("line ")
                    .nth(1)
                    .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    assert!((1..=line_count).contains(&n), "line {n} of {line_count}");
                }
            }
            Err(e @ ConfigError::Read { .. }) => panic!("parse read a file: {e}"),
        }
    });
}

#[test]
fn the_trust_issue_examples() {
    // A feed line with host bits is an error for that line, never 0.0.0.0/0.
    let err = parse_feed("198.51.100.7/0\n", FeedFormat::Plain, "feed:x").unwrap_err();
    assert!(err.to_string().contains("feed:x:1:"), "{err}");
    // `010.0.0.0/8` is refused by every path, with the octet named.
    for result in [
        parse_entry("010.0.0.0/8").map(|_| ()),
        parse_list("010.0.0.0/8\n", "l")
            .map(|_| ())
            .map_err(|e| e.errors[0].1.clone()),
        parse_address("010.0.0.1").map(|_| ()),
    ] {
        assert!(
            matches!(&result, Err(EntryError::LeadingZero { octet, .. }) if octet == "010"),
            "{result:?}"
        );
    }
    let err = Validated::parse(
        "[guard]\nprotected = [\"010.0.0.0/8\"]\n",
        Path::new("c.toml"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("c.toml:2: guard.protected"),
        "{err}"
    );
    assert!(err.to_string().contains("leading zero"), "{err}");
}
