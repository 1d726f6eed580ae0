//! BuildKit's shell tests, as tables, and kiln's own.

use super::expand::reverse_pattern;
use super::glob::{expand_template, Glob};
use super::*;

/// The environment of BuildKit's `envVarTest` table.
fn table_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
}

/// Runs a table in BuildKit's `envVarTest` format with `lexer`.
fn run_env_var_table(name: &str, table: &str, lexer: Lexer) {
    let env = table_env();
    let mut cases = 0;
    for (number, line) in table.lines().enumerate() {
        let line_no = number + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(
            fields.len(),
            3,
            "{name}:{line_no}: expected 3 fields in {line:?}"
        );
        let (platform, source, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        assert!(
            matches!(platform, "A" | "U" | "W"),
            "{name}:{line_no}: bad platform tag {platform:?}"
        );
        if platform == "W" {
            continue;
        }
        cases += 1;
        let result = lexer.process_word(source, &env);
        if expected == "error" {
            assert!(
                result.is_err(),
                "{name}:{line_no}: {source:?} should fail, got {result:?}"
            );
        } else {
            match result {
                Ok(expansion) => assert_eq!(
                    expansion.value, expected,
                    "{name}:{line_no}: expanding {source:?}"
                ),
                Err(err) => panic!("{name}:{line_no}: {source:?} failed: {err}"),
            }
        }
    }
    assert!(cases > 20, "{name}: too few cases ({cases})");
}

#[test]
fn env_var_table_matches_buildkit() {
    run_env_var_table(
        "envVarTest",
        include_str!("../../testdata/envVarTest"),
        Lexer::new('\\'),
    );
}

#[test]
fn env_var_table_with_backtick_escape() {
    run_env_var_table(
        "envVarTestBacktick",
        include_str!("../../testdata/envVarTestBacktick"),
        Lexer::new('`'),
    );
}

#[test]
fn words_table_matches_buildkit() {
    let table = include_str!("../../testdata/wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut cases = 0;
    for (number, line) in table.lines().enumerate() {
        let line_no = number + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(entry) = line.strip_prefix("ENV ") {
            let entry = entry.trim_start_matches(' ');
            let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
            env.push((key.to_owned(), value.to_owned()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(
            fields.len(),
            2,
            "wordsTest:{line_no}: expected one | in {line:?}"
        );
        let source = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        let words = lexer
            .process_words(source, &env)
            .unwrap_or_else(|_| vec!["error".to_owned()]);
        assert_eq!(words, expected, "wordsTest:{line_no}: splitting {source:?}");
        cases += 1;
    }
    assert!(cases > 20);
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// BuildKit's `TestProcessWithMatches`.
#[test]
fn process_word_reports_matched_and_unmatched_variables() {
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
        &'a [&'a str],
        &'a [&'a str],
    );
    let foo_bar: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];
    let cases: &[Case] = &[
        ("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
        (
            "x ${UNUSED}",
            &[("DUMMY", "dummy")],
            Some("x "),
            &[],
            &["UNUSED"],
        ),
        ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
        (
            "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
            foo_bar,
            Some("xxx  ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
            foo_bar,
            Some("xxx bbb ccc"),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        ("${FOO:-}", foo_bar, Some("xxx"), &["FOO"], &[]),
        ("${FOO:-}", &[], Some(""), &[], &["FOO"]),
        (
            "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
            foo_bar,
            Some("aaa bbb "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        (
            "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
            foo_bar,
            Some("aaa  "),
            &["FOO", "BAR"],
            &["BAZ"],
        ),
        ("${FOO?aaa}", foo_bar, Some("xxx"), &["FOO"], &[]),
        ("${BAR?bbb}", foo_bar, Some(""), &["BAR"], &[]),
        ("${BAZ?ccc}", foo_bar, None, &[], &[]),
        ("${FOO:?aaa}", foo_bar, Some("xxx"), &["FOO"], &[]),
        ("${BAR:?bbb}", foo_bar, None, &[], &[]),
        ("${BAZ:?ccc}", foo_bar, None, &[], &[]),
        ("${BAZ:?}", foo_bar, None, &[], &[]),
        ("${FOO=aaa}", foo_bar, None, &[], &[]),
        ("${FOO=:aaa}", foo_bar, None, &[], &[]),
        ("${FOO=}", &[], None, &[], &[]),
        (
            r"${FOO#()[]{\}^$.\*\?|\\}",
            &[("FOO", r"()[]{}^$.*?|\x")],
            Some("x"),
            &["FOO"],
            &[],
        ),
        (
            r"${FOO%%\**}",
            &[("FOO", "xx**")],
            Some("xx"),
            &["FOO"],
            &[],
        ),
        ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
        ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "x")],
            Some("xyy"),
            &["FOO", "BAR"],
            &[],
        ),
        (
            "${FOO#$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
        ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (r"${FOO#?\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
        (
            "${ABC:-.}${FOO%x}${ABC:-.}",
            &[("FOO", "xxyy")],
            Some(".xxyy."),
            &["FOO"],
            &["ABC"],
        ),
        (
            r"${FOO%%\**\*}",
            &[("FOO", "a***yy*")],
            Some("a"),
            &["FOO"],
            &[],
        ),
        ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        (
            "${FOO%%$BAR}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("xxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
            Some("/foo.*/*.txt - /foo..*.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            Some("/tmp/bar.txt - /bar.txt"),
            &["FOO", "NEEDLE"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "/a/foo/b/c.txt"),
                ("NEEDLE", "/?/"),
                ("REPLACEMENT", "/"),
            ],
            Some("/foo/b/c.txt - /foo/c.txt"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[
                ("FOO", "http://google.de"),
                ("NEEDLE", "http://"),
                ("REPLACEMENT", "https://"),
            ],
            Some("https://google.de"),
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        (
            r"${FOO//\//\/}",
            &[("FOO", "/tmp/foo.txt")],
            Some(r"\/tmp\/foo.txt"),
            &["FOO"],
            &[],
        ),
        (
            "${FOO/$BAR/ww}",
            &[("FOO", "xxyy"), ("BAR", "")],
            Some("wwxxyy"),
            &["FOO", "BAR"],
            &[],
        ),
        ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
        ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
        ("${FOO///}", &[], Some(""), &[], &["FOO"]),
    ];
    let lexer = Lexer::new('\\');
    for &(input, env, expected, matched, unmatched) in cases {
        let result = lexer.process_word(input, &map(env));
        match expected {
            None => assert!(result.is_err(), "{input:?} should fail, got {result:?}"),
            Some(expected) => {
                let expansion = result.unwrap_or_else(|err| panic!("{input:?} failed: {err}"));
                assert_eq!(expansion.value, expected, "{input:?}");
                assert_eq!(expansion.matched, set(matched), "matched of {input:?}");
                assert_eq!(
                    expansion.unmatched,
                    set(unmatched),
                    "unmatched of {input:?}"
                );
            }
        }
    }
}

/// BuildKit's `TestProcessWithMatchesPlatform`.
#[test]
fn optional_suffix_with_nested_expansion() {
    let release =
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let lexer = Lexer::new('\\');
    let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
    let with = |extra: &[(&str, &str)]| {
        let env = map(&[base.as_slice(), extra].concat());
        lexer.process_word(release, &env).unwrap().value
    };
    assert_eq!(
        with(&[("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]),
        "something-v1.2.3.linux-arm-v7.tar.gz"
    );
    assert_eq!(
        with(&[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]),
        "something-v1.2.3.linux-arm64.tar.gz"
    );
    assert_eq!(
        with(&[("TARGETARCH", "arm64")]),
        "something-v1.2.3.linux-arm64.tar.gz"
    );
}

/// BuildKit's `TestShellParserMandatoryEnvVars`.
#[test]
fn required_variables_report_their_message() {
    let lexer = Lexer::new('\\');
    let set_env = [("VAR", "plain"), ("ARG", "x")];
    let empty_env = [("VAR", ""), ("ARG", "x")];
    let unset_env = [("ARG", "x")];
    let no_empty = "${VAR:?message here$ARG}";
    let no_unset = "${VAR?message here$ARG}";

    assert_eq!(
        lexer.process_word(no_empty, &set_env).unwrap().value,
        "plain"
    );
    let err = lexer.process_word(no_empty, &empty_env).unwrap_err();
    assert_eq!(err.to_string(), "VAR: message herex");
    let err = lexer.process_word(no_empty, &unset_env).unwrap_err();
    assert_eq!(err.to_string(), "VAR: message herex");

    assert_eq!(
        lexer.process_word(no_unset, &set_env).unwrap().value,
        "plain"
    );
    assert_eq!(lexer.process_word(no_unset, &empty_env).unwrap().value, "");
    let err = lexer.process_word(no_unset, &unset_env).unwrap_err();
    assert_eq!(err.to_string(), "VAR: message herex");

    let err = lexer.process_word("a${VAR?}", &unset_env).unwrap_err();
    assert_eq!(err.to_string(), "VAR: is not allowed to be unset");
    assert_eq!(err.offset, 1);
    let err = lexer.process_word("${VAR:?}", &empty_env).unwrap_err();
    assert_eq!(err.to_string(), "VAR: is not allowed to be empty");
}

fn expand(lexer: Lexer, word: &str) -> String {
    let env = table_env();
    lexer
        .process_word(word, &env)
        .unwrap_or_else(|err| panic!("{word:?} failed: {err}"))
        .value
}

#[test]
fn raw_quotes_keeps_quote_characters() {
    let lexer = Lexer::new('\\').raw_quotes(true);
    assert_eq!(expand(lexer, r#"'a'"b"c"#), r#"'a'"b"c"#);
    assert_eq!(expand(lexer, r#""$PWD" '$PWD'"#), r#""/home" '$PWD'"#);
    assert_eq!(expand(lexer, r#"EOF"#), "EOF");
    assert_eq!(expand(lexer, r#""E\"OF""#), r#""E"OF""#);
    assert_eq!(
        lexer.process_words(r#"a "b c" 'd'"#, &table_env()).unwrap(),
        ["a", r#""b c""#, "'d'"]
    );
}

#[test]
fn raw_escapes_keeps_escape_characters() {
    let lexer = Lexer::new('\\').raw_escapes(true);
    assert_eq!(expand(lexer, r"a\ b\$PWD"), r"a\ b\$PWD");
    assert_eq!(expand(lexer, r"hello\"), r"hello\");
    assert_eq!(expand(lexer, r#""a\"b\$c""#), r#"a\"b\$c"#);
    // An escape that escapes nothing inside double quotes is doubled, as in
    // BuildKit.
    assert_eq!(expand(lexer, r#""a\b""#), r"a\\b");
    assert_eq!(
        lexer.process_words(r"a\ b c", &table_env()).unwrap(),
        [r"a\ b", "c"]
    );
}

#[test]
fn skip_process_quotes_treats_quotes_as_text() {
    let lexer = Lexer::new('\\').skip_process_quotes(true);
    assert_eq!(
        expand(lexer, r#"echo '$PWD' "$SHELL""#),
        r#"echo '/home' "bash""#
    );
    assert_eq!(expand(lexer, r"it's \$PWD"), "it's $PWD");
    assert_eq!(expand(lexer, "${XXX:-'a b'}"), "'a b'");
    assert_eq!(expand(lexer, "unbalanced \" and '"), "unbalanced \" and '");
}

#[test]
fn skip_unset_env_leaves_unset_references() {
    let lexer = Lexer::new('\\').skip_unset_env(true);
    assert_eq!(expand(lexer, "$X ${X} $PWD ${NULL}."), "$X ${X} /home .");
    assert_eq!(
        expand(lexer, "${X:-a} ${X-$PWD} ${X+b} ${X:?} ${X?m}"),
        "${X:-a} ${X-/home} ${X+b} ${X:?} ${X?m}"
    );
    assert_eq!(
        expand(lexer, "${X:=a} ${X#p} ${X%%p}"),
        "${X:=a} ${X#p} ${X%%p}"
    );
    // BuildKit drops the second slash of `//` here.
    assert_eq!(expand(lexer, "${X/a/b} ${X//a/b}"), "${X/a/b} ${X/a/b}");
    assert_eq!(expand(lexer, "${NULL:-a}${PWD-b}"), "a/home");
}

#[test]
fn skip_unset_env_still_fails_on_set_variables() {
    let lexer = Lexer::new('\\').skip_unset_env(true);
    let env = table_env();
    assert!(lexer.process_word("${PWD:=a}", &env).is_err());
    assert!(lexer.process_word("${NULL:?}", &env).is_err());
    assert!(lexer.process_word("${X", &env).is_err());
    // `=` without `:` is rejected before the variable is looked at.
    assert!(lexer.process_word("${X=a}", &env).is_err());
    let expansion = lexer.process_word("$X${PWD}", &env).unwrap();
    assert_eq!(expansion.matched, set(&["PWD"]));
    assert_eq!(expansion.unmatched, set(&["X"]));
}

#[test]
fn errors_point_at_the_construct() {
    let lexer = Lexer::new('\\');
    let env = table_env();
    let err = |word: &str| lexer.process_word(word, &env).unwrap_err();
    let check = |word: &str, offset: usize, message: &str| {
        let e = err(word);
        assert_eq!(
            (e.offset, e.to_string().as_str()),
            (offset, message),
            "{word:?}"
        );
    };
    check(
        "ab'cd",
        2,
        "unexpected end of statement while looking for matching single-quote",
    );
    check(
        "ab\"cd",
        2,
        "unexpected end of statement while looking for matching double-quote",
    );
    check(
        "é\"$PWD",
        2,
        "unexpected end of statement while looking for matching double-quote",
    );
    check("x${", 1, "syntax error: missing '}'");
    check("x${PWD", 1, "syntax error: missing '}'");
    check("x${PWD:-a", 1, "syntax error: missing '}'");
    check("x${PWD:-${NULL:-'a}", 1, "syntax error: missing '}'");
    check("x${PWD/a", 1, "syntax error: missing '/' in ${}");
    check("x${PWD/a/b", 1, "syntax error: missing '}'");
    check("x${}", 1, "syntax error: bad substitution");
    check("x${:-a}", 1, "syntax error: bad substitution");
    check("x${{a}", 1, "syntax error: bad substitution");
    check("x${PWD:=a}", 6, "unsupported modifier (:=) in substitution");
    check("x${PWD=a}", 6, "unsupported modifier (=) in substitution");
    check("x${PWD:#a}", 6, "unsupported modifier (:#) in substitution");
    check("x${PWD x}", 6, "unsupported modifier ( ) in substitution");
    check("x${XXX?}", 1, "XXX: is not allowed to be unset");
    check("x${XXX:?need it}", 1, "XXX: need it");
    check(
        r"x${PWD#\a}",
        1,
        r"invalid pattern (\a) in substitution: invalid escape '\a'",
    );
    // BuildKit reports the reversed pattern for suffixes.
    check(
        r"x${PWD%b\a}",
        1,
        r"invalid pattern (\ab) in substitution: invalid escape '\a'",
    );
    // An error inside a nested word is reported as it is while input is
    // left, and as the outer `${` being unterminated at the end of input.
    check("x${PWD:-${XXX?}}", 8, "XXX: is not allowed to be unset");
    check("x${PWD:-${XXX?}", 1, "syntax error: missing '}'");
    check("x${PWD:-${}}", 8, "syntax error: bad substitution");
}

#[test]
fn trailing_backslash_in_pattern_is_invalid() {
    let env = [("PWD", "/home"), ("TRAIL", "\\")];
    let err = Lexer::default()
        .process_word("${PWD#$TRAIL}", &env)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid pattern (\\) in substitution: invalid escape '\\\u{FFFD}'"
    );
}

const STACK_KIB: usize = 512;

#[test]
fn nesting_is_limited() {
    let lexer = Lexer::new('\\');
    let env = table_env();
    let nested = |depth: usize| format!("{}x{}", "${A:-".repeat(depth), "}".repeat(depth));
    assert_eq!(
        lexer
            .process_word(&nested(MAX_NESTING), &env)
            .unwrap()
            .value,
        "x"
    );
    let err = lexer
        .process_word(&nested(MAX_NESTING + 1), &env)
        .unwrap_err();
    assert_eq!(err.kind, ShellErrorKind::NestingTooDeep);
    assert_eq!(err.offset, 5 * MAX_NESTING);
    // The deepest nesting allowed fits in a small thread stack.
    let deepest = format!(
        "{}${{A:-${{B#*}}}}{}",
        "${A:-\"".repeat(MAX_NESTING - 2),
        "\"}".repeat(MAX_NESTING - 2)
    );
    let value = std::thread::Builder::new()
        .stack_size(STACK_KIB * 1024)
        .spawn(move || Lexer::new('\\').process_words(&deepest, &[("B", "x y")]))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(value.unwrap(), ["x", "y"]);
    // Unterminated deep nesting fails cleanly too.
    assert!(lexer.process_word(&"${A:-\"".repeat(10_000), &env).is_err());
    assert!(lexer.process_word(&"${".repeat(100_000), &env).is_err());
}

#[test]
fn process_words_keeps_text_before_a_modifier() {
    // Recent BuildKit versions lose "x" here (a shared word buffer); see
    // the module docs.
    let env = [("multi", "a b")];
    let words = Lexer::new('\\')
        .process_words("x${multi:-q}y z", &env)
        .unwrap();
    assert_eq!(words, ["xa", "by", "z"]);
    let words = Lexer::new('\\')
        .process_words(r#"x"${multi:-q}"y z"#, &env)
        .unwrap();
    assert_eq!(words, ["xa by", "z"]);
}

#[test]
fn env_getters() {
    let lexer = Lexer::default();
    let pairs = vec![
        ("A".to_owned(), "1".to_owned()),
        ("A".to_owned(), "2".to_owned()),
    ];
    assert_eq!(lexer.process_word("$A", &pairs).unwrap().value, "2");
    assert_eq!(
        lexer.process_word("$A", &pairs.as_slice()).unwrap().value,
        "2"
    );
    let tree: BTreeMap<String, String> = [("A".to_owned(), "3".to_owned())].into();
    assert_eq!(lexer.process_word("$A", &tree).unwrap().value, "3");
    let upper = |name: &str| Some(name.to_uppercase());
    assert_eq!(
        lexer.process_word("$abc-$_x", &upper).unwrap().value,
        "ABC-_X"
    );
    let none = |_: &str| None;
    assert_eq!(lexer.process_word("[$A]", &none).unwrap().value, "[]");
}

#[test]
fn unicode_names_and_whitespace() {
    let lexer = Lexer::default();
    let env = [("é", "e"), ("١٢", "digits"), ("x", "a\u{3000}b")];
    assert_eq!(lexer.process_word("$é.", &env).unwrap().value, "e.");
    assert_eq!(lexer.process_word("$١٢x", &env).unwrap().value, "digitsx");
    // Combining marks and Nl are neither letters nor digits in Go.
    assert_eq!(
        lexer.process_word("$é\u{301}", &env).unwrap().value,
        "e\u{301}"
    );
    assert_eq!(
        lexer.process_word("$x\u{2160}", &env).unwrap().value,
        "a\u{3000}b\u{2160}"
    );
    assert_eq!(lexer.process_words("$x", &env).unwrap(), ["a", "b"]);
    // A leading byte-order mark is skipped, as by Go's text/scanner.
    assert_eq!(
        lexer.process_word("\u{FEFF}$x", &env).unwrap().value,
        "a\u{3000}b"
    );
    assert_eq!(
        lexer.process_word("a\u{FEFF}", &env).unwrap().value,
        "a\u{FEFF}"
    );
}

#[test]
fn wildcards_do_not_match_newlines() {
    let lexer = Lexer::default();
    let env = [("V", "ab\ncd")];
    assert_eq!(lexer.process_word("${V#*b}", &env).unwrap().value, "\ncd");
    assert_eq!(lexer.process_word("${V##*}", &env).unwrap().value, "\ncd");
    assert_eq!(lexer.process_word("${V#*d}", &env).unwrap().value, "ab\ncd");
    assert_eq!(
        lexer.process_word("${V//?/x}", &env).unwrap().value,
        "xx\nxx"
    );
    assert_eq!(lexer.process_word("${V//*/x}", &env).unwrap().value, "x\nx");
}

#[test]
fn glob_matches_like_go_regexp() {
    // (pattern, greedy, text, from, anchored, expected match in chars)
    type Case<'a> = (&'a str, bool, &'a str, usize, bool, Option<(usize, usize)>);
    let cases: &[Case] = &[
        ("a*", true, "baaa", 0, false, Some((1, 4))),
        ("a*", false, "baaa", 0, false, Some((1, 2))),
        ("*", true, "abc", 0, true, Some((0, 3))),
        ("*", false, "abc", 0, true, Some((0, 0))),
        ("*b*", false, "abcb", 0, true, Some((0, 2))),
        ("*b*", true, "abcb", 0, true, Some((0, 4))),
        ("b", true, "abcb", 2, false, Some((3, 4))),
        ("x", true, "abc", 0, false, None),
        ("", true, "abc", 3, false, Some((3, 3))),
        ("?", true, "", 0, false, None),
    ];
    for &(pattern, greedy, text, from, anchored, expected) in cases {
        let glob = Glob::new(pattern, greedy).unwrap();
        let text: Vec<char> = text.chars().collect();
        assert_eq!(
            glob.find(&text, from, anchored),
            expected,
            "{pattern:?} in {text:?}"
        );
    }
    assert!(Glob::new("\\", true).is_err());
    assert!(Glob::new("a\\b", true).is_err());
    assert!(Glob::new("\\}\\/\\*\\?\\\\", true).is_ok());
    assert_eq!(reverse_pattern(r"a\*c"), r"c\*a");
    assert_eq!(reverse_pattern(r"\\\ab"), r"b\a\\");
    assert_eq!(reverse_pattern(r"ab\"), r"\ba");
    assert_eq!(reverse_pattern("👽\\🚀🖖"), "🖖\\🚀👽");
}

#[test]
fn glob_replacement_template() {
    let mut out = String::new();
    for (template, expected) in [
        ("$0", "M"),
        ("${0}", "M"),
        ("$$0", "$0"),
        ("$00", ""),
        ("$1", ""),
        ("$x y", " y"),
        ("${x", "${x"),
        ("$", "$"),
        ("$-", "$-"),
        ("a$0b${0}c", "aMc"),
        ("$é", ""),
    ] {
        out.clear();
        expand_template(template, "M", &mut out);
        assert_eq!(out, expected, "{template:?}");
    }
}

#[test]
fn long_inputs_stay_fast() {
    let lexer = Lexer::default();
    let value = "ab".repeat(20_000);
    let env = [("V", value.as_str()), ("P", "*a*a*a*a*a*a*a*a*c")];
    assert_eq!(lexer.process_word("${V#$P}", &env).unwrap().value, value);
    assert_eq!(lexer.process_word("${V%%$P}", &env).unwrap().value, value);
    assert_eq!(
        lexer.process_word("${V//a/}", &env).unwrap().value,
        "b".repeat(20_000)
    );
    assert_eq!(
        lexer.process_word("${V//b*a/-}", &env).unwrap().value,
        "a-b"
    );
    let many_stars = "*".repeat(50_000);
    let env = [("V", "abc"), ("P", many_stars.as_str())];
    assert_eq!(lexer.process_word("${V##$P}", &env).unwrap().value, "");
}

/// A small deterministic generator for the robustness test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn arbitrary_input_never_panics() {
    const PIECES: &[&str] = &[
        "$", "{", "}", "${", "$$", ":", "-", "+", "?", "#", "%", "/", "//", "\\", "`", "'", "\"",
        "*", "[", "]", "(", ")", "^", ".", "|", " ", "\t", "\n", "a", "A", "_", "0", "1", "@", "!",
        "=", "PWD", "NULL", "V", "P", "é", "한", "\u{301}", "\u{FEFF}", "\u{3000}", "\u{FFFD}",
        "\0", "${V:-", "${P//", "${V%%", "${NULL:?", "\\}", "\\/",
    ];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let random_word = |rng: &mut XorShift, max: usize| -> String {
        let len = rng.below(max);
        (0..len).map(|_| PIECES[rng.below(PIECES.len())]).collect()
    };
    for round in 0..20_000 {
        let word = random_word(&mut rng, 24);
        let value = random_word(&mut rng, 8);
        let pattern = random_word(&mut rng, 6);
        let env = [
            ("PWD", "/home"),
            ("NULL", ""),
            ("V", value.as_str()),
            ("P", pattern.as_str()),
        ];
        let flags = round % 16;
        let escape = if round % 32 < 16 { '\\' } else { '`' };
        let lexer = Lexer::new(escape)
            .raw_quotes(flags & 1 != 0)
            .raw_escapes(flags & 2 != 0)
            .skip_process_quotes(flags & 4 != 0)
            .skip_unset_env(flags & 8 != 0);
        let single = lexer.process_word(&word, &env);
        let split = lexer.process_words(&word, &env);
        assert_eq!(single.is_ok(), split.is_ok(), "{word:?}");
        if let Err(err) = single {
            assert!(
                err.offset <= word.len() && word.is_char_boundary(err.offset),
                "{word:?}: {err:?}"
            );
            assert!(!err.to_string().is_empty());
        }
    }
}
