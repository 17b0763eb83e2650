//! The journal where the trust issue found it failing: a full disk (a tiny tmpfs as the state
//! dir), and a damaged journal that once kept the daemon from ever starting.
mod common;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use common::daemon::TestDaemon;
use groundzero::{pins, IpNet, Shield, ShieldOptions};
use groundzero_daemon::{
    journal::{self, Journal, Record},
    registry::{Holder, Side},
};
use hyper::Method;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A directory unique to this process and call, under the system's temporary directory.
fn unique(tag: &str) -> String {
    format!(
        "gz-jr-{tag}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted and removed on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        common::require_root();
        let dir = std::env::temp_dir().join(unique("fs"));
        std::fs::create_dir_all(&dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0700").as_str()),
        )
        .unwrap_or_else(|e| panic!("mounting a tmpfs on {}: {e}", dir.display()));
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn net(i: u32) -> IpNet {
    format!("198.18.{}.{}/32", 30 + i / 250, 1 + i % 250)
        .parse()
        .unwrap()
}

fn add(i: u32, reason: &str) -> Record {
    Record::Add {
        side: Side::Block,
        net: net(i),
        holder: Holder {
            source: "api".into(),
            reason: Some(format!("{reason} {i}")),
            created: 1_700_000_000 + u64::from(i),
            expires: None,
        },
    }
}

fn damage_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(journal::DAMAGE_FILE_PREFIX))
        })
        .collect()
}

#[test]
fn a_full_disk_refuses_the_append_and_leaves_no_partial_frame() {
    let fs = Tmpfs::mount("64k");
    // Space to free later, so the journal can grow again.
    let filler = fs.dir.join("filler");
    std::fs::write(&filler, vec![0u8; 16 * 1024]).unwrap();
    let mut journal = Journal::rewrite(&fs.dir, &[]).unwrap();

    // Batches of three (~500 bytes): the one that fails is, with all likelihood, partly written
    // before ENOSPC, which is what must not stay behind.
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..1000 {
        let batch: Vec<Record> = (0..3).map(|k| add(i * 3 + k, "full disk")).collect();
        match journal.append(&batch) {
            Ok(()) => acknowledged.extend(batch),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("64 KiB never filled up");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(
        acknowledged.len() > 30,
        "only {} records fit",
        acknowledged.len()
    );
    let on_disk = std::fs::metadata(fs.dir.join(journal::FILE_NAME))
        .unwrap()
        .len();
    assert_eq!(on_disk, journal.len(), "the failed batch was cut off");
    let recovered = journal::recover(&fs.dir).unwrap();
    assert!(recovered.damage.is_empty(), "{:?}", recovered.damage);
    assert_eq!(recovered.records, acknowledged);

    // A compaction needs room for a second copy: refused, and the old journal stays in use.
    let err = journal.compact(&acknowledged).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert_eq!(journal::recover(&fs.dir).unwrap().records, acknowledged);
    let left: Vec<String> = std::fs::read_dir(&fs.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !left.iter().any(|n| n.ends_with(".tmp")),
        "the temporary file was removed: {left:?}"
    );

    // Space freed: appends work again, after exactly the acknowledged records.
    std::fs::remove_file(&filler).unwrap();
    let more: Vec<Record> = (0..3).map(|k| add(6000 + k, "after freeing")).collect();
    journal.append(&more).unwrap();
    acknowledged.extend(more);
    let recovered = journal::recover(&fs.dir).unwrap();
    assert!(recovered.damage.is_empty(), "{:?}", recovered.damage);
    assert_eq!(recovered.records, acknowledged);

    // And the compaction that failed now works.
    let live = &acknowledged[..5];
    journal.compact(live).unwrap();
    assert_eq!(journal::recover(&fs.dir).unwrap().records, live);
}

#[test]
fn damage_that_cannot_be_moved_aside_on_a_full_disk_is_an_error_not_a_loss() {
    let fs = Tmpfs::mount("64k");
    let mut journal = Journal::rewrite(&fs.dir, &[add(0, "before")]).unwrap();
    let first_end = journal.len() as usize;
    journal.append(&[add(1, "after")]).unwrap();
    drop(journal);
    let path = fs.dir.join(journal::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    // 30 KiB of garbage between the two frames: more than a full disk has room for.
    let last_frame = bytes.split_off(first_end);
    bytes.extend(vec![0x55u8; 30 * 1024]);
    bytes.extend(last_frame);
    std::fs::write(&path, &bytes).unwrap();
    // Fill the rest: the write fails part-way, which is the point.
    let filler = fs.dir.join("filler");
    assert!(std::fs::write(&filler, vec![0u8; 64 * 1024]).is_err());

    let err = journal::recover(&fs.dir).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(damage_files(&fs.dir).is_empty(), "no half copy is left");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the journal is untouched"
    );

    std::fs::remove_file(&filler).unwrap();
    let recovered = journal::recover(&fs.dir).unwrap();
    assert_eq!(recovered.records, [add(0, "before"), add(1, "after")]);
    assert_eq!(recovered.damage.len(), 1);
    assert_eq!(recovered.damage[0].length, 30 * 1024);
}

/// A state dir and pin dir for a daemon the test starts on a journal it wrote; removed on drop.
struct Dirs {
    dir: PathBuf,
    pin_dir: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        common::require_root();
        pins::ensure_bpffs().unwrap();
        let id = unique("d");
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(dir.join("state")).unwrap();
        Dirs {
            dir,
            pin_dir: PathBuf::from("/sys/fs/bpf").join(id),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Starts a daemon on the state, checks that it answers, stops it keeping its pins, and
    /// returns what its pinned blocklist maps hold in the kernel.
    fn run_daemon_then_read_kernel_maps(&self) -> HashSet<IpNet> {
        let d = TestDaemon::start_with(
            self.dir.clone(),
            self.pin_dir.clone(),
            "[guard]\nprotect_management = false",
        );
        let health = d.ok(Method::GET, "/v1/health", None);
        assert!(!health.is_null());
        d.stop();
        let shield = Shield::load(ShieldOptions {
            pin_dir: Some(self.pin_dir.clone()),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("opening the daemon's pinned maps: {e:?}"));
        shield
            .blocked()
            .unwrap()
            .into_iter()
            .map(|e| e.net)
            .collect()
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = pins::remove_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_daemon_starts_on_a_journal_with_a_corrupt_record_and_keeps_the_rest() {
    let dirs = Dirs::new();
    let state = dirs.state();
    let mut journal = Journal::rewrite(&state, &[add(0, "before"), add(1, "before")]).unwrap();
    let corrupt_at = journal.len();
    journal.append(&[add(2, "corrupt")]).unwrap();
    let corrupt_end = journal.len();
    journal.append(&[add(3, "after"), add(4, "after")]).unwrap();
    drop(journal);
    let path = state.join(journal::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    // A byte inside the middle record's payload (past its 12-byte frame header).
    bytes[corrupt_at as usize + 30] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let blocked = dirs.run_daemon_then_read_kernel_maps();
    for i in [0, 1, 3, 4] {
        assert!(blocked.contains(&net(i)), "{} is in the kernel map", net(i));
    }
    assert!(!blocked.contains(&net(2)), "the corrupt record is not");

    let moved = damage_files(&state);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(
        std::fs::read(&moved[0]).unwrap(),
        bytes[corrupt_at as usize..corrupt_end as usize],
        "the damaged frame was moved aside byte for byte"
    );
    // The daemon rewrote a clean journal with exactly the intact records.
    let after = journal::recover(&state).unwrap();
    assert!(after.damage.is_empty(), "{:?}", after.damage);
    let nets: HashSet<IpNet> = after
        .records
        .iter()
        .map(|r| match r {
            Record::Add { net, .. } | Record::Remove { net, .. } => *net,
        })
        .collect();
    assert_eq!(nets, [0, 1, 3, 4].map(net).into_iter().collect());
}

#[test]
fn the_daemon_starts_on_a_legacy_journal_cut_inside_a_character() {
    let dirs = Dirs::new();
    let state = dirs.state();
    let mut text = Vec::new();
    for i in 0..3 {
        text.extend(serde_json::to_vec(&add(i, "légacy ☕")).unwrap());
        text.push(b'\n');
    }
    let cut_at = text.len();
    let last = serde_json::to_vec(&add(3, "légacy ☕")).unwrap();
    let coffee = last.windows(3).position(|w| w == "☕".as_bytes()).unwrap();
    // A crash in the middle of the three bytes of '☕'.
    text.extend_from_slice(&last[..coffee + 1]);
    std::fs::write(state.join(journal::LEGACY_FILE_NAME), &text).unwrap();

    let blocked = dirs.run_daemon_then_read_kernel_maps();
    for i in 0..3 {
        assert!(blocked.contains(&net(i)), "{} is in the kernel map", net(i));
    }
    assert!(!blocked.contains(&net(3)));

    let moved = damage_files(&state);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(std::fs::read(&moved[0]).unwrap(), text[cut_at..]);
    assert!(
        !state.join(journal::LEGACY_FILE_NAME).exists(),
        "the legacy journal was replaced"
    );
    let after = journal::recover(&state).unwrap();
    assert_eq!(after.records.len(), 3);
    assert!(after.damage.is_empty());
}

#[test]
fn a_daemon_on_a_full_disk_refuses_changes_and_keeps_every_acknowledged_one() {
    let dirs = Dirs::new();
    // The state dir itself is a tiny tmpfs: the daemon fills it with journal records.
    let fs = Tmpfs::mount("96k");
    std::fs::remove_dir(dirs.state()).unwrap();
    std::os::unix::fs::symlink(&fs.dir, dirs.state()).unwrap();
    let extra = "[guard]\nprotect_management = false";
    let d = TestDaemon::start_with(dirs.dir.clone(), dirs.pin_dir.clone(), extra);
    let reason = "x".repeat(380);
    let mut acknowledged = HashSet::new();
    let mut refused = None;
    for i in 0..4000u32 {
        let entry = net(i);
        match d.call(
            Method::POST,
            "/v1/block",
            Some(serde_json::json!({"entries": [entry.to_string()], "reason": reason})),
        ) {
            Ok(_) => {
                acknowledged.insert(entry);
            }
            Err(groundzero_api::client::ClientError::Api { status, message }) => {
                assert_eq!(status, 503, "{message}");
                assert!(message.contains("journal"), "{message}");
                refused = Some(entry);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let refused = refused.expect("the 96k tmpfs never filled up");
    assert!(acknowledged.len() > 10, "{}", acknowledged.len());
    let kernel = || -> HashSet<IpNet> {
        Shield::load(ShieldOptions {
            pin_dir: Some(dirs.pin_dir.clone()),
            ..Default::default()
        })
        .unwrap()
        .blocked()
        .unwrap()
        .into_iter()
        .map(|e| e.net)
        .collect()
    };
    assert_eq!(kernel(), acknowledged, "the refused block was rolled back");
    assert!(!kernel().contains(&refused));
    // A restart on the still full disk starts, and holds exactly what was acknowledged.
    let (dir, pin_dir) = d.stop();
    let d = TestDaemon::start_with(dir, pin_dir, extra);
    let listed = d.ok(Method::GET, "/v1/entries?limit=100000", None);
    assert_eq!(
        listed["entries"].as_array().map(Vec::len),
        Some(acknowledged.len())
    );
    assert_eq!(kernel(), acknowledged);
    d.stop();
    // Every record on disk is intact.
    let (records, damaged) = journal::read_only(&fs.dir).unwrap();
    assert_eq!(damaged, 0);
    let on_disk: HashSet<IpNet> = records
        .iter()
        .filter_map(|r| match r {
            Record::Add { net, .. } => Some(*net),
            _ => None,
        })
        .collect();
    assert_eq!(on_disk, acknowledged);
}
