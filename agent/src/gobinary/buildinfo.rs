//! `.go.buildinfo`: the Go version that built a binary and its module information, as the Go
//! linker writes it (the same data `go version -m` prints).
//!
//! Layout (all versions): 14-byte magic `\xff Go buildinf:`, one byte pointer size, one byte
//! flags, then
//! - Go >= 1.18 (flag 0x2 "inline"): from offset 32, the version and the modinfo as
//!   uvarint-length-prefixed strings;
//! - older: at offset 16, two pointers to Go string headers `{ptr, len}` (`runtime.buildVersion`,
//!   `runtime.modinfo`), which we follow through the PT_LOAD segments.
//!
//! The modinfo string is wrapped in two 16-byte sentinels that are stripped, as
//! `debug/buildinfo` does. Input is untrusted: anything malformed gives `None`, never a panic.

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
const FLAG_BIG_ENDIAN: u8 = 0x1;
const FLAG_INLINE_STRINGS: u8 = 0x2;
/// Refuse absurd lengths from garbage (a real modinfo is a few KiB).
const MAX_STRING_LEN: u64 = 1 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BuildInfo {
    /// e.g. "go1.21.13".
    pub go_version: Option<String>,
    /// The modinfo text with its sentinels removed: `path\t...\nmod\t...\n...`.
    pub modinfo: Option<String>,
}

impl BuildInfo {
    /// The main module's path: the second field of the `mod\t<path>\t<version>...` line.
    pub fn module_path(&self) -> Option<String> {
        module_path(self.modinfo.as_deref()?)
    }
}

/// Parses the contents of a `.go.buildinfo` section. `read_loaded(vaddr, len)` returns the
/// file bytes of a loaded address range (needed only by the pre-1.18 pointer format).
/// Returns `None` when the magic is absent.
pub(crate) fn parse<'d>(
    section: &[u8],
    read_loaded: impl Fn(u64, u64) -> Option<&'d [u8]>,
) -> Option<BuildInfo> {
    // The header is 16-byte aligned; it normally starts the section.
    let start = (0..section.len()).step_by(16).find(|&i| section[i..].starts_with(MAGIC))?;
    let header = section.get(start..start + HEADER_LEN)?;
    let pointer_size = header[14];
    let flags = header[15];

    if flags & FLAG_INLINE_STRINGS != 0 {
        let mut rest = &section[start + HEADER_LEN..];
        let go_version = read_inline_bytes(&mut rest);
        let modinfo = go_version.and_then(|_| read_inline_bytes(&mut rest));
        return Some(BuildInfo {
            go_version: go_version.and_then(version_text),
            modinfo: modinfo.and_then(strip_sentinels),
        });
    }

    // Pre-1.18: pointers to string headers. Only 64-bit little-endian is meaningful here.
    if pointer_size != 8 || flags & FLAG_BIG_ENDIAN != 0 {
        return Some(BuildInfo::default());
    }
    let version_ptr = read_u64(header, 16)?;
    let modinfo_ptr = read_u64(header, 24)?;
    let read_go_string = |header_addr: u64| -> Option<&'d [u8]> {
        let string_header = read_loaded(header_addr, 16)?;
        let data = read_u64(string_header, 0)?;
        let len = read_u64(string_header, 8)?;
        if len == 0 || len > MAX_STRING_LEN {
            return None;
        }
        read_loaded(data, len)
    };
    Some(BuildInfo {
        go_version: read_go_string(version_ptr).and_then(version_text),
        modinfo: read_go_string(modinfo_ptr).and_then(strip_sentinels),
    })
}

/// Whether `section` holds build info: exactly when `parse` returns `Some`, which needs only
/// the magic and the header after it (never the pointed-to strings). What makes a file Go.
pub(crate) fn is_present(section: &[u8]) -> bool {
    parse(section, |_, _| None).is_some()
}

/// Reads one uvarint-length-prefixed byte string and advances `rest` past it.
fn read_inline_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, used) = read_uvarint(rest)?;
    if len > MAX_STRING_LEN {
        return None;
    }
    let body = rest.get(used..used.checked_add(usize::try_from(len).ok()?)?)?;
    *rest = &rest[used + body.len()..];
    Some(body)
}

fn version_text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().filter(|v| !v.is_empty()).map(str::to_string)
}

/// Go's `encoding/binary.Uvarint`: little-endian base-128, at most 10 bytes.
/// Returns (value, bytes used), or None on truncation or overflow.
pub(crate) fn read_uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in data.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return None; // overflows 64 bits
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The modinfo string is `<16-byte start sentinel><text>\n<16-byte end sentinel>` (the
/// sentinels are not UTF-8); `debug/buildinfo` checks the newline before the end sentinel and
/// so do we.
fn strip_sentinels(bytes: &[u8]) -> Option<String> {
    if bytes.len() >= 33 && bytes[bytes.len() - 17] == b'\n' {
        let inner = bytes.get(16..bytes.len() - 16)?;
        return String::from_utf8(inner.to_vec()).ok();
    }
    None
}

fn module_path(modinfo: &str) -> Option<String> {
    modinfo.lines().find_map(|line| {
        let mut fields = line.split('\t');
        (fields.next() == Some("mod"))
            .then(|| fields.next())
            .flatten()
            .filter(|path| !path.is_empty())
            .map(str::to_string)
    })
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = data.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENTINEL_START: &[u8; 16] = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";
    const SENTINEL_END: &[u8; 16] = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";

    fn uvarint(mut value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
        out
    }

    fn modinfo_text() -> Vec<u8> {
        let mut m = SENTINEL_START.to_vec();
        m.extend_from_slice(
            b"path\texample.com/svc/cmd/api\nmod\texample.com/svc\t(devel)\t\n\
              build\t-compiler=gc\n",
        );
        m.extend_from_slice(SENTINEL_END);
        m
    }

    fn inline_section(version: &[u8], modinfo: &[u8]) -> Vec<u8> {
        let mut s = MAGIC.to_vec();
        s.push(8);
        s.push(FLAG_INLINE_STRINGS);
        s.resize(HEADER_LEN, 0);
        s.extend(uvarint(version.len() as u64));
        s.extend_from_slice(version);
        s.extend(uvarint(modinfo.len() as u64));
        s.extend_from_slice(modinfo);
        s
    }

    fn no_memory(_: u64, _: u64) -> Option<&'static [u8]> {
        None
    }

    #[test]
    fn uvarint_matches_go_encoding() {
        assert_eq!(read_uvarint(&[0x00]), Some((0, 1)));
        assert_eq!(read_uvarint(&[0x7f]), Some((127, 1)));
        assert_eq!(read_uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(read_uvarint(&[0xac, 0x02, 0xff]), Some((300, 2)));
        for value in [0, 1, 127, 128, 300, 16384, u32::MAX as u64, u64::MAX] {
            let encoded = uvarint(value);
            assert_eq!(read_uvarint(&encoded), Some((value, encoded.len())), "{value}");
        }
        // Truncated, overflowing, and endless continuation bytes.
        assert_eq!(read_uvarint(&[]), None);
        assert_eq!(read_uvarint(&[0x80]), None);
        assert_eq!(read_uvarint(&[0xff; 9]), None);
        assert_eq!(
            read_uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(read_uvarint(&[0xff; 32]), None);
    }

    #[test]
    fn inline_format_gives_version_and_module_path() {
        let section = inline_section(b"go1.21.13", &modinfo_text());
        let info = parse(&section, no_memory).expect("magic present");
        assert_eq!(info.go_version.as_deref(), Some("go1.21.13"));
        assert_eq!(info.module_path().as_deref(), Some("example.com/svc"));
        assert!(info.modinfo.as_deref().unwrap().starts_with("path\texample.com/svc/cmd/api\n"));
    }

    #[test]
    fn modinfo_without_sentinels_or_mod_line_gives_no_module() {
        // `go build main.go` outside a module: no `mod` line.
        let mut m = SENTINEL_START.to_vec();
        m.extend_from_slice(b"path\tcommand-line-arguments\n");
        m.extend_from_slice(SENTINEL_END);
        let info = parse(&inline_section(b"go1.19.8", &m), no_memory).unwrap();
        assert_eq!(info.go_version.as_deref(), Some("go1.19.8"));
        assert_eq!(info.module_path(), None);
        // Too short to hold sentinels.
        let info = parse(&inline_section(b"go1.19.8", b"mod\tx\t"), no_memory).unwrap();
        assert_eq!(info.modinfo, None);
        let info = parse(&inline_section(b"go1.19.8", b""), no_memory).unwrap();
        assert_eq!(info.module_path(), None);
    }

    #[test]
    fn truncated_inline_input_never_panics() {
        let section = inline_section(b"go1.21.13", &modinfo_text());
        for len in 0..section.len() {
            let info = parse(&section[..len], no_memory);
            if len < HEADER_LEN {
                assert_eq!(info, None, "len {len}");
            } else if let Some(info) = info {
                // The version is either complete or absent, never cut short.
                assert!(matches!(info.go_version.as_deref(), None | Some("go1.21.13")));
                assert!(info.modinfo.is_none() || len == section.len());
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(parse(b"", no_memory), None);
        assert_eq!(parse(&[0xffu8; 4096], no_memory), None);
        // Magic followed by garbage lengths.
        let mut section = MAGIC.to_vec();
        section.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        section.resize(HEADER_LEN, 0);
        section.extend_from_slice(&[0xff; 12]);
        assert_eq!(parse(&section, no_memory).unwrap(), BuildInfo::default());
        // Huge declared length.
        let mut section = MAGIC.to_vec();
        section.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        section.resize(HEADER_LEN, 0);
        section.extend(uvarint(u64::MAX));
        assert_eq!(parse(&section, no_memory).unwrap(), BuildInfo::default());
        // Deterministic pseudo-random bytes after a valid header, both formats.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for flags in [0, FLAG_INLINE_STRINGS, FLAG_BIG_ENDIAN] {
            for _ in 0..200 {
                let mut section = MAGIC.to_vec();
                section.extend_from_slice(&[8, flags]);
                for _ in 0..64 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    section.push(state as u8);
                }
                let memory = section.clone();
                let _ = parse(&section, |addr, len| {
                    let start = usize::try_from(addr % 97).ok()?;
                    memory.get(start..start.checked_add(usize::try_from(len).ok()?)?)
                });
            }
        }
    }

    #[test]
    fn pointer_format_follows_string_headers() {
        // A fake address space: buildinfo header at 0x1000 pointing at two string headers.
        let base = 0x1000u64;
        let mut memory = vec![0u8; 0x400];
        let version = b"go1.16.15";
        let modinfo = modinfo_text();
        let put = |memory: &mut Vec<u8>, at: usize, bytes: &[u8]| {
            memory[at..at + bytes.len()].copy_from_slice(bytes)
        };
        put(&mut memory, 0, MAGIC);
        memory[14] = 8;
        memory[15] = 0;
        put(&mut memory, 16, &(base + 0x40).to_le_bytes()); // &runtime.buildVersion
        put(&mut memory, 24, &(base + 0x50).to_le_bytes()); // &runtime.modinfo
        put(&mut memory, 0x40, &(base + 0x100).to_le_bytes());
        put(&mut memory, 0x48, &(version.len() as u64).to_le_bytes());
        put(&mut memory, 0x50, &(base + 0x200).to_le_bytes());
        put(&mut memory, 0x58, &(modinfo.len() as u64).to_le_bytes());
        put(&mut memory, 0x100, version);
        put(&mut memory, 0x200, &modinfo);
        let read = |addr: u64, len: u64| {
            let start = usize::try_from(addr.checked_sub(base)?).ok()?;
            memory.get(start..start + usize::try_from(len).ok()?)
        };
        let info = parse(&memory[..32], read).unwrap();
        assert_eq!(info.go_version.as_deref(), Some("go1.16.15"));
        assert_eq!(info.module_path().as_deref(), Some("example.com/svc"));

        // Pointers into nowhere: no version, no error.
        let info = parse(&memory[..32], no_memory).unwrap();
        assert_eq!(info, BuildInfo::default());
        // A 4-byte pointer size (32-bit target) is not read.
        let mut header = memory[..32].to_vec();
        header[14] = 4;
        assert_eq!(parse(&header, read).unwrap(), BuildInfo::default());
    }
}
