//! Checks every SQL migration against the rules in migrations/README.md: the
//! file name, the `-- Change:` and `-- Rollback:` header, a unique version and
//! some SQL after the header. No database is needed.
//!
//! The checks run on the real `migrations/` directory, and on temporary
//! directories with broken files to show that each check can fail.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// First line of a migration that sqlx runs outside a transaction. sqlx 0.8
/// only honours it at the very start of the file, so the header follows it.
const NO_TRANSACTION_MARKER: &str = "-- no-transaction";
const CHANGE_PREFIX: &str = "-- Change:";
const ROLLBACK_PREFIX: &str = "-- Rollback:";
/// Digits of the version prefix: a UTC time as YYYYMMDDHHMMSS.
const VERSION_DIGITS: usize = 14;

/// A rule that every migration file must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    /// The file is valid UTF-8 and can be read.
    Readable,
    /// The name matches `^\d{14}_[a-z0-9_]+\.sql$`.
    FileName,
    /// The first non-empty line starts with `-- Change:` and some text.
    ChangeLine,
    /// The leading comment block has a `-- Rollback:` line with some text.
    RollbackLine,
    /// No other file has the same version number.
    UniqueVersion,
    /// At least one SQL line follows the leading comment block.
    SqlAfterHeader,
}

/// One broken rule in one file.
#[derive(Debug)]
struct Violation {
    file: String,
    rule: Rule,
    detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.file, self.detail)
    }
}

fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations")
}

/// Lists the `*.sql` files of `dir`, sorted by name.
fn sql_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("failed to read directory {}: {error}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|error| {
                    panic!("failed to list directory {}: {error}", dir.display())
                })
                .path()
        })
        .filter(|path| path.is_file())
        .filter(|path| path.extension().is_some_and(|extension| extension == "sql"))
        .collect();
    files.sort();
    files
}

/// Checks every `*.sql` file of `dir` and returns each broken rule: the
/// per-file rules in file name order, then the shared versions. Other files,
/// such as README.md, are ignored.
fn find_violations(dir: &Path) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut files_by_version: BTreeMap<u64, Vec<String>> = BTreeMap::new();

    for path in sql_files(dir) {
        let file = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let mut report = |rule: Rule, detail: String| {
            violations.push(Violation {
                file: file.clone(),
                rule,
                detail,
            });
        };

        if !is_valid_file_name(&file) {
            report(
                Rule::FileName,
                "file name must match YYYYMMDDHHMMSS_description.sql, with the description \
                 in lowercase letters, digits and underscores"
                    .to_owned(),
            );
        }
        if let Some(version) = version_of(&file) {
            files_by_version
                .entry(version)
                .or_default()
                .push(file.clone());
        }

        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                report(Rule::Readable, format!("failed to read the file: {error}"));
                continue;
            }
        };
        let header = Header::parse(&text);
        if !header.starts_with_change {
            report(
                Rule::ChangeLine,
                format!(
                    "the first non-empty line must start with `{CHANGE_PREFIX}` and say what \
                     the migration changes"
                ),
            );
        }
        if !header.has_rollback {
            report(
                Rule::RollbackLine,
                format!(
                    "the leading comment block must contain a `{ROLLBACK_PREFIX}` line with \
                     the rollback plan"
                ),
            );
        }
        if !header.has_sql_after {
            report(
                Rule::SqlAfterHeader,
                "no SQL statement follows the leading comment block".to_owned(),
            );
        }
    }

    for (version, files) in files_by_version {
        if files.len() < 2 {
            continue;
        }
        for file in &files {
            violations.push(Violation {
                file: file.clone(),
                rule: Rule::UniqueVersion,
                detail: format!(
                    "version {version} is also used by {}",
                    files
                        .iter()
                        .filter(|other| *other != file)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    violations
}

/// Checks `name` against `^\d{14}_[a-z0-9_]+\.sql$`.
fn is_valid_file_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".sql") else {
        return false;
    };
    let Some((version, description)) = stem.split_once('_') else {
        return false;
    };
    version.len() == VERSION_DIGITS
        && version.bytes().all(|byte| byte.is_ascii_digit())
        && !description.is_empty()
        && description
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

/// Parses the version as sqlx does: the digits before the first `_`, as a
/// number, so `0001_a.sql` and `1_b.sql` share version 1.
fn version_of(name: &str) -> Option<u64> {
    let (prefix, _) = name.split_once('_')?;
    if prefix.is_empty() || !prefix.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    prefix.parse().ok()
}

/// Summary of the leading comment block of a migration.
struct Header {
    starts_with_change: bool,
    has_rollback: bool,
    has_sql_after: bool,
}

impl Header {
    /// Reads the leading comment block: every line before the first one that
    /// is neither blank nor a `--` comment. A `-- no-transaction` first line
    /// is skipped, because sqlx requires it before the header.
    fn parse(text: &str) -> Header {
        let text = text.strip_prefix(NO_TRANSACTION_MARKER).unwrap_or(text);
        let mut lines = text
            .lines()
            .map(str::trim)
            .skip_while(|line| line.is_empty());

        let first = lines.next().unwrap_or("");
        let starts_with_change = has_text_after(first, CHANGE_PREFIX);
        let mut has_rollback = has_text_after(first, ROLLBACK_PREFIX);
        let mut has_sql_after = false;
        for line in lines {
            if line.is_empty() {
                continue;
            }
            if !line.starts_with("--") {
                has_sql_after = true;
                break;
            }
            has_rollback |= has_text_after(line, ROLLBACK_PREFIX);
        }
        // A first line that is SQL already counts as SQL after an empty header.
        if !first.is_empty() && !first.starts_with("--") {
            has_sql_after = true;
        }
        Header {
            starts_with_change,
            has_rollback,
            has_sql_after,
        }
    }
}

/// Checks that `line` starts with `prefix` followed by some text.
fn has_text_after(line: &str, prefix: &str) -> bool {
    line.strip_prefix(prefix)
        .is_some_and(|rest| !rest.trim().is_empty())
}

/// Fails with every file of the real migrations directory that breaks `rule`.
fn assert_rule_holds(rule: Rule) {
    let dir = migrations_dir();
    let broken: Vec<String> = find_violations(&dir)
        .iter()
        .filter(|violation| violation.rule == rule)
        .map(ToString::to_string)
        .collect();
    assert!(
        broken.is_empty(),
        "{} migration(s) in {} break the {rule:?} rule (see migrations/README.md):\n{}",
        broken.len(),
        dir.display(),
        broken.join("\n")
    );
}

#[test]
fn migrations_directory_has_migrations() {
    let dir = migrations_dir();
    let count = sql_files(&dir).len();
    assert!(count > 0, "no *.sql files found in {}", dir.display());
}

#[test]
fn migrations_are_readable() {
    assert_rule_holds(Rule::Readable);
}

#[test]
fn migration_file_names_are_valid() {
    assert_rule_holds(Rule::FileName);
}

#[test]
fn migrations_start_with_change() {
    assert_rule_holds(Rule::ChangeLine);
}

#[test]
fn migrations_state_rollback_plan() {
    assert_rule_holds(Rule::RollbackLine);
}

#[test]
fn migration_versions_are_unique() {
    assert_rule_holds(Rule::UniqueVersion);
}

#[test]
fn migrations_contain_sql() {
    assert_rule_holds(Rule::SqlAfterHeader);
}

#[test]
fn migrations_readme_documents_header() {
    let path = migrations_dir().join("README.md");
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
    assert!(
        text.contains(CHANGE_PREFIX),
        "{} does not mention `{CHANGE_PREFIX}`",
        path.display()
    );
    assert!(
        text.contains(ROLLBACK_PREFIX),
        "{} does not mention `{ROLLBACK_PREFIX}`",
        path.display()
    );
}

// The tests below run `find_violations` on temporary directories, to show
// that each check fails on a broken file and passes on a valid one.

/// A directory under the system temporary directory, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new() -> ScratchDir {
        let path = std::env::temp_dir().join(format!("nepxy-migrations-{}", Uuid::new_v4()));
        fs::create_dir(&path)
            .unwrap_or_else(|error| panic!("failed to create {}: {error}", path.display()));
        ScratchDir { path }
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.path.join(name);
        fs::write(&path, text)
            .unwrap_or_else(|error| panic!("failed to write {}: {error}", path.display()));
    }

    /// Runs `find_violations` on this directory and returns sorted (file,
    /// rule) pairs.
    fn violations(&self) -> Vec<(String, Rule)> {
        let mut found: Vec<(String, Rule)> = find_violations(&self.path)
            .into_iter()
            .map(|violation| (violation.file, violation.rule))
            .collect();
        found.sort();
        found
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // A leftover directory under the temporary directory is harmless.
        let _ = fs::remove_dir_all(&self.path);
    }
}

const VALID_MIGRATION: &str = "\
-- Change: adds the payout_notes table.
-- Rollback: forward-only. The previous binary ignores the table.

CREATE TABLE payout_notes (payout_id uuid PRIMARY KEY, note text NOT NULL);
";

/// Converts expected (file, rule) pairs into the sorted form that
/// `ScratchDir::violations` returns.
fn pairs(expected: &[(&str, Rule)]) -> Vec<(String, Rule)> {
    let mut pairs: Vec<(String, Rule)> = expected
        .iter()
        .map(|(file, rule)| ((*file).to_owned(), *rule))
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn checker_accepts_valid_migrations() {
    let dir = ScratchDir::new();
    dir.write("20260101000000_payout_notes.sql", VALID_MIGRATION);
    dir.write(
        "20260102000000_index_payout_notes.sql",
        "-- no-transaction\n\
         -- Change: indexes payout_notes by note without blocking writes.\n\
         -- Rollback: forward-only. The previous binary does not use the index.\n\
         CREATE INDEX CONCURRENTLY payout_notes_note ON payout_notes (note);\n",
    );
    dir.write(
        "20260103000000_two_paragraphs.sql",
        "\n-- Change: adds a column,\n-- on two lines.\n\n\
         -- Rollback: forward-only.\n\nALTER TABLE payout_notes ADD COLUMN author text;\n",
    );
    dir.write("README.md", "Not a migration, so it is not checked.\n");

    assert_eq!(dir.violations(), pairs(&[]));
}

#[test]
fn checker_reports_missing_change_line() {
    let dir = ScratchDir::new();
    dir.write(
        "20260101000000_no_change.sql",
        "-- Rollback: forward-only.\nCREATE TABLE a (id int);\n",
    );
    dir.write(
        "20260102000000_change_second.sql",
        "-- Adds table b.\n-- Change: adds table b.\n-- Rollback: forward-only.\n\
         CREATE TABLE b (id int);\n",
    );
    dir.write(
        "20260103000000_empty_change.sql",
        "-- Change:\n-- Rollback: forward-only.\nCREATE TABLE c (id int);\n",
    );
    dir.write("20260104000000_sql_only.sql", "CREATE TABLE d (id int);\n");

    assert_eq!(
        dir.violations(),
        pairs(&[
            ("20260101000000_no_change.sql", Rule::ChangeLine),
            ("20260102000000_change_second.sql", Rule::ChangeLine),
            ("20260103000000_empty_change.sql", Rule::ChangeLine),
            ("20260104000000_sql_only.sql", Rule::ChangeLine),
            ("20260104000000_sql_only.sql", Rule::RollbackLine),
        ])
    );
}

#[test]
fn checker_reports_missing_rollback_line() {
    let dir = ScratchDir::new();
    dir.write(
        "20260101000000_no_rollback.sql",
        "-- Change: adds table a.\nCREATE TABLE a (id int);\n",
    );
    // A rollback comment after the first statement is not part of the header.
    dir.write(
        "20260102000000_late_rollback.sql",
        "-- Change: adds table b.\nCREATE TABLE b (id int);\n-- Rollback: forward-only.\n",
    );

    assert_eq!(
        dir.violations(),
        pairs(&[
            ("20260101000000_no_rollback.sql", Rule::RollbackLine),
            ("20260102000000_late_rollback.sql", Rule::RollbackLine),
        ])
    );
}

#[test]
fn checker_reports_bad_file_names() {
    let bad_names = [
        "2026_short_version.sql",
        "20260101000000_Upper_Case.sql",
        "20260101000001_payout-notes.sql",
        "20260101000002_.sql",
        "20260101000003_payout_notes.down.sql",
        "20260101000004payout_notes.sql",
        "v20260101000005_payout_notes.sql",
    ];
    let dir = ScratchDir::new();
    for name in bad_names {
        dir.write(name, VALID_MIGRATION);
    }

    let expected: Vec<(&str, Rule)> = bad_names
        .iter()
        .map(|name| (*name, Rule::FileName))
        .collect();
    assert_eq!(dir.violations(), pairs(&expected));
}

#[test]
fn checker_reports_duplicate_versions() {
    let dir = ScratchDir::new();
    dir.write("20260101000000_first.sql", VALID_MIGRATION);
    dir.write("20260101000000_second.sql", VALID_MIGRATION);
    dir.write("20260102000000_alone.sql", VALID_MIGRATION);

    assert_eq!(
        dir.violations(),
        pairs(&[
            ("20260101000000_first.sql", Rule::UniqueVersion),
            ("20260101000000_second.sql", Rule::UniqueVersion),
        ])
    );
    let details: Vec<String> = find_violations(&dir.path)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        details.contains(
            &"20260101000000_first.sql: version 20260101000000 is also used by \
              20260101000000_second.sql"
                .to_owned()
        ),
        "message names the other file: {details:?}"
    );
}

#[test]
fn checker_reports_header_without_sql() {
    let dir = ScratchDir::new();
    dir.write(
        "20260101000000_header_only.sql",
        "-- Change: adds nothing yet.\n-- Rollback: forward-only.\n\n",
    );
    dir.write("20260102000000_empty.sql", "");

    assert_eq!(
        dir.violations(),
        pairs(&[
            ("20260101000000_header_only.sql", Rule::SqlAfterHeader),
            ("20260102000000_empty.sql", Rule::ChangeLine),
            ("20260102000000_empty.sql", Rule::RollbackLine),
            ("20260102000000_empty.sql", Rule::SqlAfterHeader),
        ])
    );
}

#[test]
fn checker_reports_unreadable_file() {
    let dir = ScratchDir::new();
    let path = dir.path.join("20260101000000_latin1.sql");
    fs::write(&path, b"-- Change: caf\xe9\n-- Rollback: none\nSELECT 1;\n")
        .unwrap_or_else(|error| panic!("failed to write {}: {error}", path.display()));

    assert_eq!(
        dir.violations(),
        pairs(&[("20260101000000_latin1.sql", Rule::Readable)])
    );
}
