//! moby's and Go's tables for the matcher, docker's for the file format, and the walker's
//! BuildKit behaviour.

use super::matcher::{Kind, Tok};
use super::*;
use std::cell::RefCell;
use std::collections::BTreeMap;

fn parse_strings(text: &str) -> Vec<String> {
    parse_ignore_file(text)
        .unwrap()
        .patterns
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn matcher(patterns: &[&str]) -> Matcher {
    Matcher::from_strings(patterns).unwrap()
}

// ---- reading ----------------------------------------------------------------------

#[test]
fn read_all_like_moby() {
    // moby/patternmatcher ignorefile_test.go TestReadAll, without the lone `!` lines,
    // which ReadAll keeps and patternmatcher.New then rejects (tested below).
    let content =
        "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n";
    assert_eq!(
        parse_strings(content),
        [
            "test1",
            "test2",
            "a/file/here",
            "lastfile",
            "!inverted/abs/path"
        ]
    );
    let file = parse_ignore_file(content).unwrap();
    let lines: Vec<usize> = file.patterns.iter().map(|p| p.line).collect();
    assert_eq!(lines, [1, 2, 3, 5, 7]);
    assert_eq!(parse_ignore_file("").unwrap(), IgnoreFile::default());
}

#[test]
fn cleaning() {
    let cases = [
        ("a", "a"),
        ("/a", "a"),
        ("./a", "a"),
        ("a/", "a"),
        ("a//b/../b", "a/b"),
        ("a/./b/", "a/b"),
        ("//a", "a"),
        ("/", "/"),
        ("//", "/"),
        (".", "."),
        ("./", "."),
        ("a/..", "."),
        ("..", ".."),
        ("../a", "../a"),
        ("a/../..", ".."),
        ("/../a", "a"),
        ("/..", "/"),
        ("**/", "**"),
        ("dir/**/", "dir/**"),
        ("  spaced  ", "spaced"),
        ("\tfoo\t", "foo"),
        ("foo\r", "foo"),
        ("\u{a0}foo\u{3000}", "foo"),
        ("!a/", "!a"),
        ("! /inverted/abs/path", "!inverted/abs/path"),
        ("  !  spaced/../x  ", "!x"),
        ("!./a//b", "!a/b"),
        ("!!a", "!!a"),
        ("a b", "a b"),
    ];
    for (line, want) in cases {
        assert_eq!(parse_strings(line), [want], "line {line:?}");
    }
}

#[test]
fn comments_blank_lines_and_bom() {
    assert!(parse_strings("# comment\n\n   \n\t\n#!not-an-exception\n").is_empty());
    // Only a `#` in the first column starts a comment.
    assert_eq!(parse_strings("  # not a comment"), ["# not a comment"]);
    assert_eq!(parse_strings("a # b"), ["a # b"]);
    // The BOM goes from the first line only, before the comment test.
    assert_eq!(parse_strings("\u{feff}# c\nx"), ["x"]);
    assert_eq!(parse_strings("\u{feff}foo\nbar"), ["foo", "bar"]);
    assert_eq!(parse_strings("foo\n\u{feff}bar"), ["foo", "\u{feff}bar"]);
    // CRLF.
    assert_eq!(parse_strings("a\r\n# c\r\n\r\n!b\r\n"), ["a", "!b"]);
    let file = parse_ignore_file("a\r\n# c\r\n\r\n!b\r\n").unwrap();
    assert_eq!(file.patterns[1].line, 4);
    assert!(file.patterns[1].exception);
    assert_eq!(file.patterns[1].text, "b");
}

#[test]
fn lone_exclamation_is_an_error() {
    for (text, line) in [
        ("a\n!", 2),
        ("! ", 1),
        ("x\n\n!  \n", 3),
        ("!/", 1),
        ("! //", 1),
    ] {
        let err = parse_ignore_file(text).unwrap_err();
        assert_eq!(
            err,
            IgnoreError::LoneExclamation { line: Some(line) },
            "{text:?}"
        );
        assert_eq!(err.line(), Some(line));
    }
    assert!(matches!(
        Matcher::from_strings(["!"]),
        Err(IgnoreError::LoneExclamation { line: None })
    ));
    // `!.` and `!..` are patterns (that match nothing).
    assert_eq!(parse_strings("!.\n!.."), ["!.", "!.."]);
}

#[test]
fn bad_patterns_name_the_pattern_and_line() {
    let err = parse_ignore_file("ok\n!src/[abc\n").unwrap_err();
    match &err {
        IgnoreError::BadPattern { line, pattern, .. } => {
            assert_eq!(*line, Some(2));
            assert_eq!(pattern, "src/[abc");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("line 2: bad pattern \"src/[abc\""),
        "{err}"
    );
    // moby issue 52203: passes Go's syntax check, fails docker's regex; an error here.
    let err = parse_ignore_file("[Local-Only]/").unwrap_err();
    assert!(
        matches!(err, IgnoreError::BadPattern { line: Some(1), .. }),
        "{err:?}"
    );
    assert!(Matcher::from_strings(["[z-a]"]).is_err());
    assert!(Matcher::from_strings(["[a-a]"]).is_ok());
    let patterns = [Pattern {
        line: 7,
        exception: true,
        text: "x\\".into(),
    }];
    assert_eq!(Matcher::new(&patterns).unwrap_err().line(), Some(7));
    assert_eq!(
        Matcher::new(&[Pattern::new("[", false)])
            .unwrap_err()
            .line(),
        None
    );
}

#[test]
fn overlong_lines() {
    let ok = format!("{}\nb", "a".repeat(MAX_LINE_BYTES - 1));
    assert_eq!(parse_ignore_file(&ok).unwrap().patterns.len(), 2);
    let ok_last = "a".repeat(MAX_LINE_BYTES - 1);
    assert_eq!(parse_ignore_file(&ok_last).unwrap().patterns.len(), 1);
    let long = format!("b\n{}\n", "a".repeat(MAX_LINE_BYTES));
    assert_eq!(
        parse_ignore_file(&long).unwrap_err(),
        IgnoreError::LineTooLong { line: 2 }
    );
    let long_last = "a".repeat(MAX_LINE_BYTES);
    assert_eq!(parse_ignore_file(&long_last).unwrap_err().line(), Some(1));
    let long_crlf = format!("{}\r\n", "a".repeat(MAX_LINE_BYTES - 1));
    assert!(parse_ignore_file(&long_crlf).is_err());
}

// ---- matching: moby's own tables ----------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Want {
    Fail,
    Exact,
    Inexact,
}

#[test]
fn moby_matches_table() {
    use Want::*;
    // moby/patternmatcher patternmatcher_test.go TestMatches (plus its Unix-only cases).
    let tests: &[(&str, &str, Want)] = &[
        ("**", "file", Exact),
        ("**", "file/", Exact),
        ("**/", "file", Exact),
        ("**/", "file/", Exact),
        ("**", "/", Exact),
        ("**/", "/", Exact),
        ("**", "dir/file", Exact),
        ("**/", "dir/file", Exact),
        ("**", "dir/file/", Exact),
        ("**/", "dir/file/", Exact),
        ("**/**", "dir/file", Exact),
        ("**/**", "dir/file/", Exact),
        ("dir/**", "dir/file", Exact),
        ("dir/**", "dir/file/", Exact),
        ("dir/**", "dir/dir2/file", Exact),
        ("dir/**", "dir/dir2/file/", Exact),
        ("**/dir", "dir", Exact),
        ("**/dir", "dir/file", Inexact),
        ("**/dir2/*", "dir/dir2/file", Exact),
        ("**/dir2/*", "dir/dir2/file/", Inexact),
        ("**/dir2/**", "dir/dir2/dir3/file", Exact),
        ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
        ("**file", "file", Exact),
        ("**file", "dir/file", Exact),
        ("**/file", "dir/file", Exact),
        ("**file", "dir/dir/file", Exact),
        ("**/file", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file.txt", Exact),
        ("**/file*txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt*", "dir/dir/file.txt", Exact),
        ("**/**/*.txt", "dir/dir/file.txt", Exact),
        ("**/**/*.txt2", "dir/dir/file.txt", Fail),
        ("**/*.txt", "file.txt", Exact),
        ("**/**/*.txt", "file.txt", Exact),
        ("a**/*.txt", "a/file.txt", Exact),
        ("a**/*.txt", "a/dir/file.txt", Exact),
        ("a**/*.txt", "a/dir/dir/file.txt", Exact),
        ("a/*.txt", "a/dir/file.txt", Fail),
        ("a/*.txt", "a/file.txt", Exact),
        ("a/*.txt**", "a/file.txt", Exact),
        ("a[b-d]e", "ae", Fail),
        ("a[b-d]e", "ace", Exact),
        ("a[b-d]e", "aae", Fail),
        ("a[^b-d]e", "aze", Exact),
        (".*", ".foo", Exact),
        (".*", "foo", Fail),
        ("abc.def", "abcdef", Fail),
        ("abc.def", "abc.def", Exact),
        ("abc.def", "abcZdef", Fail),
        ("abc?def", "abcZdef", Exact),
        ("abc?def", "abcdef", Fail),
        ("**/foo/bar", "foo/bar", Exact),
        ("**/foo/bar", "dir/foo/bar", Exact),
        ("**/foo/bar", "dir/dir2/foo/bar", Exact),
        ("abc/**", "abc", Fail),
        ("abc/**", "abc/def", Exact),
        ("abc/**", "abc/def/ghi", Exact),
        ("**/.foo", ".foo", Exact),
        ("**/.foo", "bar.foo", Fail),
        ("a(b)c/def", "a(b)c/def", Exact),
        ("a(b)c/def", "a(b)c/xyz", Fail),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        ("a\\\\", "a\\", Exact),
        ("a\\*b", "a*b", Exact),
    ];
    for &(pattern, text, want) in tests {
        let m = matcher(&[pattern]);
        assert_eq!(
            m.matches_exact(text),
            want == Exact,
            "exact: {pattern:?} {text:?}"
        );
        assert_eq!(
            m.matches_or_parent_matches(text),
            want != Fail,
            "or-parent: {pattern:?} {text:?}"
        );
        assert_eq!(
            m.is_excluded(text),
            want != Fail,
            "or-parent: {pattern:?} {text:?}"
        );
    }
    let multi: &[(&[&str], &str, bool)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
    ];
    for &(patterns, text, want) in multi {
        assert_eq!(
            matcher(patterns).matches_or_parent_matches(text),
            want,
            "{patterns:?} {text:?}"
        );
        assert_eq!(
            matcher(patterns).is_excluded(text),
            want,
            "{patterns:?} {text:?}"
        );
    }
}

#[test]
fn moby_single_pattern_tests() {
    // The small tests at the top of patternmatcher_test.go.
    let cases: &[(&[&str], &str, bool)] = &[
        (&["*"], "fileutils.go", true),
        (&["*.go"], "fileutils.go", true),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["*.go"], ".", false),
        (&[], "/any/path/there", false),
        (&["docs", "config", ""], "config", true),
        (&["docs", "  !docs/README.md"], "docs/README.md", false),
        (&["docs", "!docs/README.md  "], "docs/README.md", false),
    ];
    for &(patterns, text, want) in cases {
        assert_eq!(
            matcher(patterns).is_excluded(text),
            want,
            "{patterns:?} {text:?}"
        );
    }
    assert!(matcher(&["docs", "  !docs/README.md"]).has_exceptions());
    assert!(!matcher(&["docs", "config"]).has_exceptions());
    assert!(Matcher::from_strings(["["]).is_err());
}

#[test]
fn go_filepath_match_table() {
    // Go's filepath.Match tests as moby runs them (TestMatch): (pattern, path, match, err).
    let tests: &[(&str, &str, bool, bool)] = &[
        ("abc", "abc", true, false),
        ("*", "abc", true, false),
        ("*c", "abc", true, false),
        ("a*", "a", true, false),
        ("a*", "abc", true, false),
        ("a*", "ab/c", true, false),
        ("a*/b", "abc/b", true, false),
        ("a*/b", "a/c/b", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
        ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
        ("ab[c]", "abc", true, false),
        ("ab[b-d]", "abc", true, false),
        ("ab[e-g]", "abc", false, false),
        ("ab[^c]", "abc", false, false),
        ("ab[^b-d]", "abc", false, false),
        ("ab[^e-g]", "abc", true, false),
        ("a\\*b", "a*b", true, false),
        ("a\\*b", "ab", false, false),
        ("a?b", "a☺b", true, false),
        ("a[^a]b", "a☺b", true, false),
        ("a???b", "a☺b", false, false),
        ("a[^a][^a][^a]b", "a☺b", false, false),
        ("[a-ζ]*", "α", true, false),
        ("*[a-ζ]", "A", false, false),
        ("a?b", "a/b", false, false),
        ("a*b", "a/b", false, false),
        ("[\\]a]", "]", true, false),
        ("[\\-]", "-", true, false),
        ("[x\\-]", "x", true, false),
        ("[x\\-]", "-", true, false),
        ("[x\\-]", "z", false, false),
        ("[\\-x]", "x", true, false),
        ("[\\-x]", "-", true, false),
        ("[\\-x]", "a", false, false),
        ("[]a]", "]", false, true),
        ("[-]", "-", false, true),
        ("[x-]", "x", false, true),
        ("[x-]", "-", false, true),
        ("[x-]", "z", false, true),
        ("[-x]", "x", false, true),
        ("[-x]", "-", false, true),
        ("[-x]", "a", false, true),
        ("\\", "a", false, true),
        ("[a-b-c]", "a", false, true),
        ("[", "a", false, true),
        ("[^", "a", false, true),
        ("[^bc", "a", false, true),
        ("a[", "a", false, true),
        ("a[", "ab", false, true),
        ("*x", "xxx", true, false),
    ];
    for &(pattern, path, want, want_err) in tests {
        match Matcher::from_strings([pattern]) {
            Ok(m) => {
                assert!(!want_err, "{pattern:?} should be rejected");
                assert_eq!(m.is_excluded(path), want, "{pattern:?} {path:?}");
            }
            Err(e) => {
                assert!(want_err, "{pattern:?} rejected: {e}");
                assert!(matches!(e, IgnoreError::BadPattern { .. }));
            }
        }
    }
}

#[test]
fn moby_compile_kinds() {
    // patternmatcher_test.go compileTests: which kind of match each pattern becomes.
    let tests = [
        ("*", "glob"),
        ("file*", "glob"),
        ("*file", "glob"),
        ("a*/b", "glob"),
        ("**", "suffix"),
        ("**/**", "glob"),
        ("dir/**", "prefix"),
        ("**/dir", "suffix"),
        ("**/dir2/*", "glob"),
        ("**/dir2/**", "glob"),
        ("**file", "suffix"),
        ("**/file*txt", "glob"),
        ("**/**/*.txt", "glob"),
        ("a[b-d]e", "glob"),
        (".*", "glob"),
        ("abc.def", "exact"),
        ("abc?def", "glob"),
        ("**/foo/bar", "suffix"),
        ("a(b)c/def", "exact"),
        ("a.|)$(}+{bc", "exact"),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "exact",
        ),
    ];
    for (pattern, want) in tests {
        let got = match Kind::compile(pattern).unwrap() {
            Kind::Exact(_) => "exact",
            Kind::Prefix(_) => "prefix",
            Kind::Suffix(_) => "suffix",
            Kind::Glob(_) => "glob",
        };
        assert_eq!(got, want, "{pattern:?}");
    }
    assert_eq!(
        Kind::compile("dir/**").unwrap(),
        Kind::Prefix("dir/".into())
    );
    assert_eq!(
        Kind::compile("**/foo/bar").unwrap(),
        Kind::Suffix("/foo/bar".into())
    );
    // `(.*/)?(.*/)?[^/]*\.txt`
    assert_eq!(
        Kind::compile("**/**/*.txt").unwrap(),
        Kind::Glob(vec![
            Tok::AnyDirs,
            Tok::AnyDirs,
            Tok::Star,
            Tok::Lit('.'),
            Tok::Lit('t'),
            Tok::Lit('x'),
            Tok::Lit('t')
        ])
    );
}

// ---- matching: documented examples and the rest ------------------------------------

#[test]
fn docs_examples() {
    // The Dockerfile reference, ".dockerignore file".
    let m = matcher(&["*/temp*", "*/*/temp*", "temp?"]);
    for (path, want) in [
        ("somedir/temporary.txt", true),
        ("somedir/temp", true),
        ("somedir/temp/x", true),
        ("somedir/subdir/temporary.txt", true),
        ("tempa", true),
        ("tempb", true),
        ("temp", false),
        ("temporary.txt", false),
        ("a/b/c/temp", false),
    ] {
        assert_eq!(m.is_excluded(path), want, "{path}");
    }
    let go = matcher(&["**/*.go"]);
    assert!(go.is_excluded("main.go"));
    assert!(go.is_excluded("a/b/c/main.go"));
    assert!(!go.is_excluded("main.gox"));

    let m = matcher(&["*.md", "!README.md"]);
    assert!(m.is_excluded("CHANGES.md"));
    assert!(!m.is_excluded("README.md"));
    assert!(
        !m.is_excluded("docs/x.md"),
        "`*` stays within one directory"
    );

    let m = matcher(&["*.md", "!README*.md", "README-secret.md"]);
    assert!(m.is_excluded("CHANGES.md"));
    assert!(!m.is_excluded("README.md"));
    assert!(m.is_excluded("README-secret.md"));

    let m = matcher(&["*.md", "README-secret.md", "!README*.md"]);
    assert!(m.is_excluded("CHANGES.md"));
    assert!(!m.is_excluded("README.md"));
    assert!(!m.is_excluded("README-secret.md"));

    // `/foo/bar` and `foo/bar` both exclude `bar` in `foo` at the root.
    let file = parse_ignore_file("/foo/bar").unwrap();
    let m = file.matcher().unwrap();
    assert!(m.is_excluded("foo/bar"));
    assert!(m.is_excluded("foo/bar/baz"));
    assert!(!m.is_excluded("x/foo/bar"));
}

#[test]
fn wildcards_classes_escapes() {
    let cases: &[(&str, &str, bool)] = &[
        ("?", "a", true),
        ("?", "ab", false),
        ("?", "é", true),
        ("a?c", "a/c", false),
        ("*", "a/b", true), // via the parent `a`
        ("*/b", "a/b", true),
        ("*/b", "b", false),
        ("[a-c]x", "bx", true),
        ("[a-c]x", "dx", false),
        ("[^a-c]x", "dx", true),
        ("[!a]", "!", true),
        ("[!a]", "a", true),
        ("[!a]", "b", false),
        ("[^a]", "/", true),
        ("a[/]b", "a/b", true),
        ("\\[a]", "[a]", true),
        ("\\[a]", "a", false),
        ("\\?", "?", true),
        ("\\?", "x", false),
        ("a\\b", "ab", true),
        ("x]", "x]", true),
        ("a{b,c}", "a{b,c}", true),
        ("a{b,c}", "ab", false),
        ("a+", "a+", true),
        ("a+", "aa", false),
        ("a|b", "a", false),
        ("$x", "$x", true),
    ];
    for &(pattern, path, want) in cases {
        assert_eq!(
            matcher(&[pattern]).is_excluded(path),
            want,
            "{pattern:?} {path:?}"
        );
    }
}

#[test]
fn double_star_in_every_position() {
    let cases: &[(&str, &str, bool)] = &[
        ("**", "a", true),
        ("**", "a/b/c", true),
        ("**/foo", "foo", true),
        ("**/foo", "a/foo", true),
        ("**/foo", "a/b/foo", true),
        ("**/foo", "a/foo/x", true),
        ("**/foo", "afoo", false),
        ("**/foo", "foox", false),
        ("foo/**", "foo", false),
        ("foo/**", "foo/a", true),
        ("foo/**", "foo/a/b", true),
        ("foo/**", "foobar/a", false),
        ("foo**", "foobar/a", true),
        ("a/**/b", "a/b", true),
        ("a/**/b", "a/x/b", true),
        ("a/**/b", "a/x/y/b", true),
        ("a/**/b", "a/x/y/b/c", true),
        ("a/**/b", "a/xb", false),
        ("a/**/b", "ab", false),
        ("a/**/b", "x/a/b", false),
        ("a/**/*.rs", "a/main.rs", true),
        ("a/**/*.rs", "a/x/y/main.rs", true),
        ("**/a/**", "a/b", true),
        ("**/a/**", "x/a/b", true),
        ("**/a/**", "x/a", false),
        ("**/a/**/b", "x/a/y/z/b", true),
        // moby quirks.
        ("**file", "myfile", true),
        ("**file", "dir/myfile", true),
        ("a/**b", "a/b", true),
        ("a/**b", "a/x/b", true),
        ("a/**b", "a/xb", false),
        ("a**", "abc/d", true),
        ("***", "a/b", true),
        ("a/**/b", "a/x\ny/b", false),
        ("a/**", "a/x\ny", true),
        ("a/*/b", "a/x\ny/b", true),
    ];
    for &(pattern, path, want) in cases {
        assert_eq!(
            matcher(&[pattern]).is_excluded(path),
            want,
            "{pattern:?} {path:?}"
        );
    }
}

#[test]
fn caret_quirk() {
    // Literal when the pattern is otherwise literal…
    assert!(matcher(&["a^b"]).is_excluded("a^b"));
    assert!(matcher(&["**/a^b"]).is_excluded("x/a^b"));
    // …an anchor in a regex pattern: `^a^b[^/]*$` matches nothing.
    assert!(!matcher(&["a^b*"]).is_excluded("a^b"));
    assert!(!matcher(&["a^b*"]).is_excluded("a^bc"));
    // …and an anchor at the start is harmless.
    assert!(matcher(&["^a*"]).is_excluded("abc"));
    assert!(matcher(&["**/^a*"]).is_excluded("abc"));
    assert!(!matcher(&["**/^a*"]).is_excluded("x/abc"));
    // An escaped caret is a caret.
    assert!(matcher(&["a\\^b*"]).is_excluded("a^bc"));
}

#[test]
fn parent_directories_match() {
    let m = matcher(&["build"]);
    assert!(m.is_excluded("build"));
    assert!(m.is_excluded("build/a/b.o"));
    assert!(!m.is_excluded("src/build"));
    assert!(!m.is_excluded("buildx"));
    let m = matcher(&["*/cache"]);
    assert!(m.is_excluded("a/cache/x/y"));
    assert!(!m.is_excluded("a/b/cache/x"));
    // An exception also applies below the directory it names.
    let m = matcher(&["**", "!src"]);
    assert!(!m.is_excluded("src/a/b.rs"));
    assert!(m.is_excluded("srcx"));
    // Last match wins, directory by directory.
    let m = matcher(&["a", "!a/b", "a/b/c"]);
    assert!(m.is_excluded("a/x"));
    assert!(!m.is_excluded("a/b/x"));
    assert!(m.is_excluded("a/b/c/x"));
    // An exception before the exclusion changes nothing.
    let m = matcher(&["!a/keep", "a"]);
    assert!(m.is_excluded("a/keep"));
}

#[test]
fn walk_semantics_differ_from_matches_or_parent_matches() {
    // docker's walk tries `!a` on `a` only while `a` is excluded; it is not, so `!a`
    // does not count as matching `a` for `a/x`.
    let m = matcher(&["a/*", "!a"]);
    assert!(!m.is_excluded("a"));
    assert!(m.is_excluded("a/x"));
    assert!(!m.matches_or_parent_matches("a/x"));
    let m = matcher(&["**/*.log", "!logs"]);
    assert!(m.is_excluded("logs/app.log"));
    assert!(!m.matches_or_parent_matches("logs/app.log"));
    // The second `a` is not tried on `a`, already excluded, so it does not count for `a/x`.
    let m = matcher(&["a", "!a/x", "a"]);
    assert!(m.is_excluded("a"));
    assert!(!m.is_excluded("a/x"));
    assert!(m.matches_or_parent_matches("a/x"));
    let fs = FakeFs::new(&["a/x", "a/y"]);
    let (seen, _) = walk_paths(&fs, &["a", "!a/x", "a"]);
    assert_eq!(seen, ["a", "a/x"]);
    // Where no pattern is passed over the two agree.
    let m = matcher(&["a", "!a/x", "a/x/y"]);
    for p in ["a", "a/x", "a/x/y", "a/x/z", "a/x/y/z", "a/w"] {
        assert_eq!(m.is_excluded(p), m.matches_or_parent_matches(p), "{p}");
    }
}

#[test]
fn root_and_odd_patterns() {
    for p in [".", "**", "*", "/"] {
        let m = parse_ignore_file(p).unwrap().matcher().unwrap();
        assert!(!m.is_excluded(""), "{p}");
        assert!(!m.is_excluded("."), "{p}");
    }
    // `/`, `..` and `../x` match nothing in the context.
    for p in ["/", "..", "../a", "a/../.."] {
        let m = parse_ignore_file(p).unwrap().matcher().unwrap();
        for path in ["a", "a/b", "..", "x/.."] {
            assert!(!m.is_excluded(path) || path.contains(".."), "{p} {path}");
        }
    }
    assert!(!matcher(&["/"]).is_excluded("a"));
}

#[test]
fn can_skip_dir_cases() {
    let m = matcher(&["node_modules"]);
    assert!(m.can_skip_dir("node_modules"));
    assert!(!m.can_skip_dir("src"), "not excluded");
    let m = matcher(&["dir", "!dir/keep"]);
    assert!(!m.can_skip_dir("dir"));
    assert!(m.can_skip_dir("dir/sub"));
    let m = matcher(&["dir", "!dir/a/b/*.txt"]);
    assert!(!m.can_skip_dir("dir"));
    assert!(!m.can_skip_dir("dir/a"));
    assert!(!m.can_skip_dir("dir/a/b"));
    assert!(m.can_skip_dir("dir/c"));
    assert!(m.can_skip_dir("dir/a/c"));
    let m = matcher(&["dir", "!dir/**"]);
    assert!(!m.is_excluded("dir/x"));
    let m = matcher(&["**", "!**/keep"]);
    assert!(!m.can_skip_dir("a"));
    assert!(!m.can_skip_dir("a/b/c"));
    let m = matcher(&["*", "!*.json"]);
    assert!(
        m.can_skip_dir("node_modules"),
        "`*.json` cannot match below a directory"
    );
    let m = matcher(&["*", "!*/keep"]);
    assert!(!m.can_skip_dir("node_modules"));
    let m = matcher(&["*", "!src**"]);
    assert!(!m.can_skip_dir("srcx"));
    assert!(m.can_skip_dir("lib"));
    let m = matcher(&["*", "!**keep"]);
    assert!(!m.can_skip_dir("lib"));
    let m = matcher(&["a", "!a"]);
    assert!(!m.can_skip_dir("a"), "not excluded");
}

#[test]
fn candidates() {
    assert_eq!(
        ignore_file_candidates("Dockerfile"),
        ["Dockerfile.dockerignore", ".dockerignore"]
    );
    assert_eq!(
        ignore_file_candidates("./build/Dockerfile.prod"),
        ["build/Dockerfile.prod.dockerignore", ".dockerignore"]
    );
    assert_eq!(
        ignore_file_candidates("deploy//x/../Containerfile"),
        ["deploy/Containerfile.dockerignore", ".dockerignore"]
    );
    assert_eq!(ignore_file_candidates("-"), [".dockerignore"]);
    assert_eq!(ignore_file_candidates(""), [".dockerignore"]);
}

// ---- walking ------------------------------------------------------------------------

/// A context held in memory; counts and records listings.
struct FakeFs {
    dirs: BTreeMap<String, Vec<DirEntry>>,
    reads: RefCell<Vec<String>>,
}

impl FakeFs {
    /// From file paths; a path ending in `/` is an (empty) directory.
    fn new(paths: &[&str]) -> Self {
        let mut dirs: BTreeMap<String, Vec<DirEntry>> = BTreeMap::new();
        dirs.insert(String::new(), Vec::new());
        for path in paths {
            let is_dir_path = path.ends_with('/');
            let path = path.trim_end_matches('/');
            let parts: Vec<&str> = path.split('/').collect();
            for (i, name) in parts.iter().enumerate() {
                let parent = parts[..i].join("/");
                let is_dir = i + 1 < parts.len() || is_dir_path;
                let list = dirs.entry(parent).or_default();
                if !list.iter().any(|e| e.name == *name) {
                    // Reverse order, to check that the walker sorts.
                    list.insert(
                        0,
                        DirEntry {
                            name: name.to_string(),
                            is_dir,
                        },
                    );
                }
                if is_dir {
                    dirs.entry(parts[..=i].join("/")).or_default();
                }
            }
        }
        FakeFs {
            dirs,
            reads: RefCell::new(Vec::new()),
        }
    }
}

impl ContextFs for FakeFs {
    type Error = String;
    fn read_dir(&self, rel_dir: &str) -> Result<Vec<DirEntry>, String> {
        self.reads.borrow_mut().push(rel_dir.to_string());
        self.dirs
            .get(rel_dir)
            .cloned()
            .ok_or_else(|| format!("no dir {rel_dir:?}"))
    }
}

fn walk_paths(fs: &FakeFs, patterns: &[&str]) -> (Vec<String>, WalkStats) {
    let mut seen = Vec::new();
    let stats = walk(fs, &matcher(patterns), |p, _| seen.push(p.to_string())).unwrap();
    (seen, stats)
}

#[test]
fn walk_skips_excluded_dirs_whole() {
    let fs = FakeFs::new(&[
        "Dockerfile",
        "node_modules/a/x.js",
        "node_modules/b/y.js",
        "src/main.rs",
        "src/target/o",
    ]);
    let (seen, stats) = walk_paths(&fs, &["node_modules", "**/target"]);
    assert_eq!(seen, ["Dockerfile", "src", "src/main.rs"]);
    assert_eq!(*fs.reads.borrow(), ["", "src"]);
    assert_eq!(
        stats,
        WalkStats {
            dirs_read: 2,
            dirs_skipped: 2,
            visited: 3,
            excluded: 0
        }
    );
}

#[test]
fn walk_descends_for_exceptions() {
    let fs = FakeFs::new(&["dir/keep", "dir/other", "dir/sub/x", "top"]);
    let (seen, stats) = walk_paths(&fs, &["dir", "!dir/keep"]);
    assert_eq!(seen, ["dir", "dir/keep", "top"]);
    assert_eq!(
        *fs.reads.borrow(),
        ["", "dir"],
        "dir/sub cannot hold dir/keep"
    );
    assert_eq!(stats.dirs_skipped, 1);
    assert_eq!(stats.excluded, 1);

    let fs = FakeFs::new(&["dir/a/deep/f", "dir/a/deep/g", "dir/a/z", "dir/b/f"]);
    let (seen, _) = walk_paths(&fs, &["dir", "!dir/a/deep/f"]);
    assert_eq!(seen, ["dir", "dir/a", "dir/a/deep", "dir/a/deep/f"]);
    assert_eq!(*fs.reads.borrow(), ["", "dir", "dir/a", "dir/a/deep"]);

    // Nothing re-included: the excluded directories are listed but never visited.
    let fs = FakeFs::new(&["dir/keep", "dir/sub/x"]);
    let (seen, _) = walk_paths(&fs, &["!dir/keep", "dir"]);
    assert!(seen.is_empty());

    // A wildcard exception forces a full descent and visits only what it includes.
    let fs = FakeFs::new(&["a/b/main.go", "a/b/x.txt", "a/c/y.txt", "z.go", "empty/"]);
    let (seen, stats) = walk_paths(&fs, &["**", "!**/*.go"]);
    assert_eq!(seen, ["a", "a/b", "a/b/main.go", "z.go"]);
    assert_eq!(stats.dirs_read, 5);

    // `*` then exceptions: unrelated top-level directories are skipped.
    let fs = FakeFs::new(&[
        "node_modules/x/package.json",
        "package.json",
        "src/lib.rs",
        "README.md",
    ]);
    let (seen, _) = walk_paths(&fs, &["*", "!*.json", "!src"]);
    assert_eq!(seen, ["package.json", "src", "src/lib.rs"]);
    assert_eq!(*fs.reads.borrow(), ["", "src"]);
}

#[test]
fn walk_order_and_errors() {
    let fs = FakeFs::new(&["b", "a-b", "a/x", "a/y/", "C"]);
    let (seen, stats) = walk_paths(&fs, &[]);
    assert_eq!(seen, ["C", "a", "a/x", "a/y", "a-b", "b"]);
    assert_eq!(stats.dirs_read, 3);
    struct Broken;
    impl ContextFs for Broken {
        type Error = &'static str;
        fn read_dir(&self, rel_dir: &str) -> Result<Vec<DirEntry>, &'static str> {
            match rel_dir {
                "" => Ok(vec![DirEntry {
                    name: "d".into(),
                    is_dir: true,
                }]),
                _ => Err("denied"),
            }
        }
    }
    assert_eq!(walk(&Broken, &Matcher::default(), |_, _| {}), Err("denied"));
}

/// The walker visits exactly what a full traversal filtered by `is_excluded` keeps (plus
/// the directories above kept entries), on random trees and patterns.
#[test]
fn walk_agrees_with_brute_force() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let names = ["a", "b", "keep", "x.go", "node_modules", "ab"];
    let pool = [
        "a",
        "b",
        "keep",
        "*.go",
        "**/*.go",
        "**/keep",
        "a/**",
        "*",
        "**",
        "a/b",
        "a/keep",
        "*/keep",
        "a*",
        "?",
        "**/b",
        "b/**/keep",
        "a/*/keep",
        "node_modules",
        "[ab]",
        "**b",
        "a/**b",
        "*/*",
    ];
    let (mut skipped, mut excluded_dirs_read) = (0, 0);
    for _ in 0..400 {
        // A random tree: each name, in each directory, is absent, a file or a directory.
        let mut dirs: BTreeMap<String, Vec<DirEntry>> = BTreeMap::new();
        let mut todo = vec![(String::new(), 0)];
        while let Some((dir, depth)) = todo.pop() {
            let mut entries = Vec::new();
            for name in names {
                let is_dir = match rand(if depth < 3 { 3 } else { 2 }) {
                    0 => continue,
                    1 => false,
                    _ => true,
                };
                if is_dir {
                    let path = if dir.is_empty() {
                        name.to_string()
                    } else {
                        format!("{dir}/{name}")
                    };
                    todo.push((path, depth + 1));
                }
                entries.push(DirEntry {
                    name: name.to_string(),
                    is_dir,
                });
            }
            dirs.insert(dir, entries);
        }
        let fs = FakeFs {
            dirs,
            reads: RefCell::new(Vec::new()),
        };
        let patterns: Vec<String> = (0..(1 + rand(4)))
            .map(|_| {
                let p = pool[rand(pool.len())];
                if rand(2) == 0 {
                    format!("!{p}")
                } else {
                    p.to_string()
                }
            })
            .collect();
        let m = Matcher::from_strings(&patterns).unwrap();
        let mut seen = Vec::new();
        let stats = walk(&fs, &m, |p, _| seen.push(p.to_string())).unwrap();
        skipped += stats.dirs_skipped;
        excluded_dirs_read += fs
            .reads
            .borrow()
            .iter()
            .filter(|d| m.is_excluded(d))
            .count();

        // Brute force: every path of the tree, in walk order.
        let mut all = Vec::new();
        fn collect(fs: &FakeFs, dir: &str, out: &mut Vec<String>) {
            let mut entries = fs.dirs[dir].clone();
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            for e in entries {
                let path = if dir.is_empty() {
                    e.name.clone()
                } else {
                    format!("{dir}/{}", e.name)
                };
                out.push(path.clone());
                if e.is_dir {
                    collect(fs, &path, out);
                }
            }
        }
        collect(&fs, "", &mut all);
        let included: Vec<&String> = all.iter().filter(|p| !m.is_excluded(p)).collect();
        let want: Vec<String> = all
            .iter()
            .filter(|p| {
                included
                    .iter()
                    .any(|i| *i == *p || i.starts_with(&format!("{p}/")))
            })
            .cloned()
            .collect();
        assert_eq!(seen, want, "patterns {patterns:?} tree {:?}", fs.dirs);
    }
    // Both ways of handling an excluded directory were exercised.
    assert!(
        skipped > 100 && excluded_dirs_read > 100,
        "{skipped} {excluded_dirs_read}"
    );
}
