//! Table tests of the Dockerfile syntax, one case per row: the input and either the instructions
//! it parses to (rendered on one line, with the command form for RUN/CMD/ENTRYPOINT and heredoc
//! bodies spelled out) or the error it must give. Expectations follow BuildKit's parser.

use kiln_dockerfile::instructions::{Command, CommandLine};
use kiln_dockerfile::{plan, Dockerfile, PlanOptions};

/// Global ARGs as written, then each stage's FROM as written and its instructions as planned
/// (expanded) for every stage.
fn summary(text: &str) -> Result<Vec<String>, String> {
    let df = Dockerfile::parse(text, "Dockerfile").map_err(|e| e.to_string())?;
    let mut out: Vec<String> = df.global_args.iter().map(|i| render(&i.command)).collect();
    for stage in &df.stages {
        let options = PlanOptions {
            target: stage.name.clone(),
            ..PlanOptions::default()
        };
        let options = if stage.name.is_none() && stage.index + 1 != df.stages.len() {
            continue;
        } else {
            options
        };
        let plan = plan(&df, &options).map_err(|e| e.to_string())?;
        let planned = plan
            .stages
            .iter()
            .find(|s| s.index == stage.index)
            .expect("target stage planned");
        out.push(render(&stage.from.command));
        out.extend(planned.instructions.iter().map(|i| render(&i.command)));
    }
    Ok(out)
}

fn render(command: &Command) -> String {
    let form = |c: &CommandLine| match c {
        CommandLine::Exec(_) => "exec",
        CommandLine::Shell(_) => "shell",
    };
    let mut s = match command {
        Command::Run { command: c, .. }
        | Command::Cmd { command: c }
        | Command::Entrypoint { command: c } => {
            let text = command.to_string();
            let (keyword, rest) = text.split_once(' ').unwrap_or((&text, ""));
            format!("{keyword}[{}] {rest}", form(c))
        }
        Command::Onbuild {
            trigger: Some(trigger),
            ..
        } => format!("ONBUILD {{{}}}", render(&trigger.command)),
        Command::Onbuild { error: Some(e), .. } => format!("ONBUILD {{error: {e}}}"),
        other => other.to_string(),
    };
    if let Command::Run { heredocs, .. } = command {
        for h in heredocs {
            s.push_str(&format!(" |{}:{:?}|", h.name, h.content));
        }
    }
    if let Command::Copy(a) | Command::Add(a) = command {
        for h in &a.inline {
            s.push_str(&format!(
                " |{}{}:{:?}|",
                h.name,
                if h.expand { "" } else { "(raw)" },
                h.content
            ));
        }
    }
    s
}

#[track_caller]
fn ok(input: &str, expected: &[&str]) {
    match summary(input) {
        Ok(actual) => assert_eq!(actual, expected, "input:\n{input}"),
        Err(e) => panic!("input:\n{input}\nunexpected error: {e}"),
    }
}

#[track_caller]
fn err(input: &str, expected: &str) {
    match summary(input) {
        Ok(actual) => panic!("input:\n{input}\nparsed to {actual:?}, expected error {expected:?}"),
        Err(e) => assert_eq!(e, expected, "input:\n{input}"),
    }
}

#[test]
fn keywords_are_case_insensitive_and_leading_space_is_ignored() {
    ok(
        "from a\n  run x\nCoPy a b\n",
        &["FROM a", "RUN[shell] x", "COPY a b"],
    );
    // Bare RUN/CMD/ENTRYPOINT are an empty shell command, as in BuildKit.
    ok(
        "FROM a\nRUN\nCMD\n",
        &["FROM a", "RUN[shell] ", "CMD[shell] "],
    );
}

#[test]
fn shell_form_keeps_escapes_and_quotes_for_the_shell() {
    ok(
        "FROM a\nRUN echo \"a  b\" \\$HOME 'c\\d' $X\n",
        &["FROM a", "RUN[shell] echo \"a  b\" \\$HOME 'c\\d' $X"],
    );
    ok(
        "FROM a\nCMD echo # not a comment\n",
        &["FROM a", "CMD[shell] echo # not a comment"],
    );
}

#[test]
fn continuations_join_lines_skipping_comments_and_blank_lines() {
    // Trailing whitespace after the escape still continues; the next line keeps its indent.
    ok(
        "FROM a\nRUN apt-get update && \\ \t\n# a comment inside\n    apt-get install -y x \\\n\n  y\n",
        &["FROM a", "RUN[shell] apt-get update &&     apt-get install -y x   y"],
    );
    // A continuation at the end of the file ends the instruction.
    ok("FROM a\nRUN echo a \\", &["FROM a", "RUN[shell] echo a"]);
    // An escaped escape character at the end is not a continuation (BuildKit's rule).
    ok(
        "FROM a\nWORKDIR C:\\\\\nUSER x\n",
        &["FROM a", "WORKDIR C:\\", "USER x"],
    );
    // Comment lines indented inside a continuation are still comments.
    ok(
        "FROM a\nRUN a \\\n   # note\n b\n",
        &["FROM a", "RUN[shell] a  b"],
    );
}

#[test]
fn escape_directive_switches_to_backtick() {
    ok(
        "# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\nCOPY a\\b c:\\x\n",
        &["FROM a", "RUN[shell] dir c:\\   /w", "COPY a\\b c:\\x"],
    );
    // Not at the top: a comment (with a warning), as in BuildKit; the escape stays `\`.
    ok(
        "FROM a\n# escape=`\nRUN x \\\n y\n",
        &["FROM a", "RUN[shell] x  y"],
    );
    // A blank line ends the directive block.
    ok("\n# escape=`\nFROM a\n", &["FROM a"]);
    err(
        "# escape=x\nFROM a\n",
        "Dockerfile:1:1: invalid escape token \"x\": it must be ` or \\",
    );
    err(
        "# escape=`\n# escape=`\nFROM a\n",
        "Dockerfile:2:1: only one `escape` parser directive can be used",
    );
}

#[test]
fn directives_are_case_insensitive_and_syntax_is_recorded() {
    let df = Dockerfile::parse(
        "# SYNTAX = docker/dockerfile:1.7\n#check=skip=all\nFROM a\n",
        "Dockerfile",
    )
    .unwrap();
    assert_eq!(
        df.directives.syntax.as_deref(),
        Some("docker/dockerfile:1.7")
    );
    assert_eq!(df.directives.check.as_deref(), Some("skip=all"));
    // An unknown directive ends the block: the escape after it is a plain comment (BuildKit),
    // with a warning.
    let df = Dockerfile::parse("# foo=bar\n# escape=`\nFROM a\n", "Dockerfile").unwrap();
    assert_eq!(df.directives.escape, '\\');
    assert!(
        df.warnings
            .iter()
            .any(|w| w.rule == "DirectiveAfterContent" && w.pos.line == 2),
        "{:?}",
        df.warnings
    );
    // A byte-order mark before the first directive is allowed.
    let df = Dockerfile::parse("\u{feff}# escape=`\nFROM a\n", "Dockerfile").unwrap();
    assert_eq!(df.directives.escape, '`');
}

#[test]
fn json_arrays_are_exec_form_and_invalid_json_falls_back_to_shell_form() {
    ok(
        "FROM a\nCMD [\"echo\", \"hi\"]\nENTRYPOINT [\"a\" \"b\"]\nRUN [ \"a\", ]\nCMD []\n",
        &[
            "FROM a",
            "CMD[exec] [\"echo\",\"hi\"]",
            "ENTRYPOINT[shell] [\"a\" \"b\"]",
            "RUN[shell] [ \"a\", ]",
            "CMD[exec] []",
        ],
    );
    // Single quotes are not JSON: shell form.
    ok("FROM a\nCMD ['a']\n", &["FROM a", "CMD[shell] ['a']"]);
    err(
        "FROM a\nCMD [\"a\", 1]\n",
        "Dockerfile:2:1: CMD: when using JSON array syntax, arrays must be comprised of strings only",
    );
    // COPY with a JSON array keeps spaces in names.
    ok(
        "FROM a\nCOPY [\"a b\", \"/c d/\"]\n",
        &["FROM a", "COPY a b /c d/"],
    );
}

#[test]
fn env_and_label_forms() {
    ok(
        "FROM a\nENV A=1 B=\"two words\" C=three\\ words\nENV LEGACY value with  spaces\nLABEL \"com.x\"=\"y\" k=v\n",
        &[
            "FROM a",
            "ENV A=1 B=\"two words\" C=\"three words\"",
            "ENV LEGACY=\"value with  spaces\"",
            "LABEL com.x=y k=v",
        ],
    );
    // One value per variable within an instruction: B sees the old A.
    ok(
        "FROM scratch\nENV A=old\nENV A=new B=$A\n",
        &["FROM scratch", "ENV A=old", "ENV A=new B=old"],
    );
    err("FROM a\nENV A\n", "Dockerfile:2:1: ENV: ENV must have two arguments: `ENV NAME=VALUE` (or the legacy `ENV NAME VALUE`)");
    err(
        "FROM a\nENV A=1 B\n",
        "Dockerfile:2:1: ENV: syntax error: can't find = in \"B\"; must be of the form NAME=VALUE",
    );
    err(
        "FROM a\nLABEL =x\n",
        "Dockerfile:2:1: LABEL: LABEL names can not be blank",
    );
}

#[test]
fn arg_forms() {
    ok(
        "ARG A B=2 C=\"x y\"\nFROM a\n",
        &["ARG A B=2 C=\"\\\"x y\\\"\"", "FROM a"],
    );
    err(
        "FROM a\nARG\n",
        "Dockerfile:2:1: ARG: ARG requires at least one argument",
    );
}

#[test]
fn flags_and_the_double_dash_terminator() {
    ok(
        "FROM a\nCOPY --chown=1:2 --chmod=0755 --link -- --weird-name /d/\n",
        &[
            "FROM a",
            "COPY --chown=1:2 --chmod=0755 --link --weird-name /d/",
        ],
    );
    ok(
        "FROM a\nCOPY --exclude=*.md --exclude=x . /d\n",
        &["FROM a", "COPY --exclude=*.md --exclude=x . /d"],
    );
    err(
        "FROM a\nCOPY --chwon=1 a b\n",
        "Dockerfile:2:6: COPY: unknown flag --chwon (did you mean --chown?)",
    );
    err(
        "FROM a\nRUN --from=x echo\n",
        "Dockerfile:2:5: RUN: unknown flag --from (it is only valid on COPY)",
    );
    err(
        "FROM a\nWORKDIR --x /a\n",
        "Dockerfile:2:9: WORKDIR: unknown flag --x",
    );
    err(
        "FROM a\nCOPY --from a b\n",
        "Dockerfile:2:6: COPY: flag --from needs a value (--from=VALUE)",
    );
    err(
        "FROM a\nCOPY --link=maybe a b\n",
        "Dockerfile:2:6: COPY: invalid value \"maybe\" for --link: expected true or false",
    );
    err(
        "FROM a\nCOPY --chown=1 --chown=2 a b\n",
        "Dockerfile:2:16: COPY: flag --chown given more than once",
    );
    err(
        "FROM a\nADD --from=x a b\n",
        "Dockerfile:2:5: ADD: unknown flag --from (it is only valid on COPY)",
    );
}

#[test]
fn heredocs() {
    ok(
        "FROM a\nRUN <<EOF\necho $HOME\nEOF\n",
        &["FROM a", "RUN[shell] <<EOF |EOF:\"echo $HOME\\n\"|"],
    );
    ok(
        "FROM a\nRUN python3 <<PY\nprint(1)\nPY\nRUN echo done\n",
        &[
            "FROM a",
            "RUN[shell] python3 <<PY |PY:\"print(1)\\n\"|",
            "RUN[shell] echo done",
        ],
    );
    // <<- strips leading tabs from the body and the terminator.
    ok(
        "FROM a\nRUN <<-EOT\n\techo a\n\t\techo b\n\tEOT\n",
        &["FROM a", "RUN[shell] <<-EOT |EOT:\"echo a\\necho b\\n\"|"],
    );
    // Two heredocs on one line, read one after the other.
    ok(
        "FROM a\nCOPY <<a <<b /dir/\nA\na\nB\nb\n",
        &["FROM a", "COPY <<a <<b /dir/ |a:\"A\\n\"| |b:\"B\\n\"|"],
    );
    // A quoted delimiter turns off expansion of the body.
    ok(
        "FROM a\nCOPY <<'EOF' /x\n$A\nEOF\nCOPY <<\"E2\" /y\n$A\nE2\n",
        &[
            "FROM a",
            "COPY <<EOF /x |EOF(raw):\"$A\\n\"|",
            "COPY <<E2 /y |E2(raw):\"$A\\n\"|",
        ],
    );
    // `<<$NAME` is a heredoc too (unset variables are kept while detecting markers).
    ok(
        "FROM a\nRUN cat <<$EOF\nx\n$EOF\n",
        &["FROM a", "RUN[shell] cat <<$EOF |$EOF:\"x\\n\"|"],
    );
    // JSON form never has heredocs.
    ok(
        "FROM a\nRUN [\"cat\", \"<<EOF\"]\n",
        &["FROM a", "RUN[exec] [\"cat\",\"<<EOF\"]"],
    );
    // Heredoc markers after a continuation.
    ok(
        "FROM a\nRUN cat \\\n  <<EOF > /f\nx\nEOF\n",
        &["FROM a", "RUN[shell] cat   <<EOF > /f |EOF:\"x\\n\"|"],
    );
    err("FROM a\nRUN <<EOF\necho\n", "Dockerfile:2:1: RUN: unterminated heredoc <<EOF: no line reads exactly \"EOF\" before the end of the file");
    err(
        "FROM a\nCOPY a <<EOF\nx\nEOF\n",
        "Dockerfile:2:8: COPY: a heredoc cannot be used as a destination",
    );
}

#[test]
fn onbuild_triggers() {
    ok(
        "FROM a\nONBUILD RUN echo hi\nONBUILD COPY --chown=1 . /app\n",
        &[
            "FROM a",
            "ONBUILD {RUN[shell] echo hi}",
            "ONBUILD {COPY --chown=1 . /app}",
        ],
    );
    err(
        "FROM a\nONBUILD ONBUILD RUN x\n",
        "Dockerfile:2:1: ONBUILD: chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    );
    err(
        "FROM a\nONBUILD FROM b\n",
        "Dockerfile:2:1: ONBUILD: FROM isn't allowed as an ONBUILD trigger",
    );
    err(
        "FROM a\nONBUILD MAINTAINER me\n",
        "Dockerfile:2:1: ONBUILD: MAINTAINER isn't allowed as an ONBUILD trigger",
    );
    err(
        "FROM a\nONBUILD\n",
        "Dockerfile:2:1: ONBUILD: ONBUILD requires at least one argument",
    );
    // Other bad triggers are kept (BuildKit fails only in the image that runs them), with a warning.
    ok(
        "FROM a\nONBUILD RUN --chwon x\n",
        &["FROM a", "ONBUILD {error: RUN: unknown flag --chwon}"],
    );
    // A long chain of ONBUILDs is an error, not a deep recursion.
    err(
        &format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(5000)),
        "Dockerfile:2:1: ONBUILD: chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    );
    // The stored expression keeps heredoc bodies, so the child can parse it.
    let df = Dockerfile::parse("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n", "Dockerfile").unwrap();
    let Command::Onbuild { expression, .. } = &df.stages[0].instructions[0].command else {
        panic!("not ONBUILD")
    };
    assert_eq!(expression, "RUN <<EOF\necho hi\nEOF");
}

#[test]
fn healthcheck_forms() {
    ok(
        "FROM a\nHEALTHCHECK NONE\nHEALTHCHECK --interval=5m --timeout=3s --start-period=1s --start-interval=500ms --retries=3 CMD curl -f http://x/ || exit 1\nHEALTHCHECK CMD [\"/bin/check\", \"-q\"]\n",
        &[
            "FROM a",
            "HEALTHCHECK NONE",
            "HEALTHCHECK --interval=5m --timeout=3s --start-period=1s --start-interval=500ms --retries=3 CMD curl -f http://x/ || exit 1",
            "HEALTHCHECK CMD [\"/bin/check\",\"-q\"]",
        ],
    );
    // Options on NONE are ignored, as BuildKit does.
    ok(
        "FROM a\nHEALTHCHECK --interval=5s NONE\n",
        &["FROM a", "HEALTHCHECK NONE"],
    );
    err(
        "FROM a\nHEALTHCHECK NONE x\n",
        "Dockerfile:2:1: HEALTHCHECK: HEALTHCHECK NONE takes no arguments",
    );
    err(
        "FROM a\nHEALTHCHECK CMD\n",
        "Dockerfile:2:1: HEALTHCHECK: missing command after HEALTHCHECK CMD",
    );
    err(
        "FROM a\nHEALTHCHECK TEST x\n",
        "Dockerfile:2:1: HEALTHCHECK: unknown type \"TEST\" in HEALTHCHECK (try CMD or NONE)",
    );
    err(
        "FROM a\nHEALTHCHECK --interval=10 CMD x\n",
        "Dockerfile:2:1: HEALTHCHECK: invalid value \"10\" for --interval: missing unit in duration \"10\"",
    );
    err(
        "FROM a\nHEALTHCHECK --retries=-1 CMD x\n",
        "Dockerfile:2:1: HEALTHCHECK: invalid value \"-1\" for --retries: retries cannot be negative",
    );
}

#[test]
fn shell_instruction_requires_json() {
    ok(
        "FROM a\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n",
        &["FROM a", "SHELL [\"/bin/bash\",\"-o\",\"pipefail\",\"-c\"]"],
    );
    err(
        "FROM a\nSHELL /bin/bash -c\n",
        "Dockerfile:2:1: SHELL: SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/bash\", \"-c\"]",
    );
}

#[test]
fn stages_and_structure() {
    err(
        "",
        "Dockerfile:1:1: the Dockerfile has no instructions: add at least a FROM line",
    );
    err(
        "# only\n\n# comments\n",
        "Dockerfile:1:1: the Dockerfile has no instructions: add at least a FROM line",
    );
    err(
        "RUN x\nFROM a\n",
        "Dockerfile:1:1: RUN: no build stage in current context: the first instruction must be FROM (only ARG and parser directives may come before it)",
    );
    err(
        "ARG A\n",
        "Dockerfile:1:1: the Dockerfile has no FROM instruction: add one after the global ARGs",
    );
    err("FROM a AS\n", "Dockerfile:1:1: FROM: FROM requires either one or three arguments: `FROM image` or `FROM image AS name`");
    err(
        "FROM a AS 1st\n",
        "Dockerfile:1:11: FROM: invalid name for build stage: \"1st\", name can't start with a number or contain symbols",
    );
    err(
        "FROM a AS b\nFROM c AS B\n",
        "Dockerfile:2:1: FROM: duplicate stage name \"b\": already used by the stage at line 1",
    );
    err(
        "FROM a\nFORM b\n",
        "Dockerfile:2:1: unknown instruction FORM (did you mean FROM?)",
    );
    err(
        "FROM a\n  CPOY a b\n",
        "Dockerfile:2:3: unknown instruction CPOY (did you mean COPY?)",
    );
}

#[test]
fn copy_argument_counts() {
    err(
        "FROM a\nCOPY onlyone\n",
        "Dockerfile:2:1: COPY: COPY requires at least two arguments (sources and a destination), but only one was provided",
    );
    err(
        "FROM a\nADD\n",
        "Dockerfile:2:1: ADD: ADD requires at least two arguments (sources and a destination), but none was provided",
    );
    err("FROM a\nCOPY --chmod=999 a b\n", "Dockerfile:2:14: COPY: invalid value \"999\" for --chmod: expected an octal mode up to 7777 (e.g. 0755) or a symbolic mode (e.g. u+x)");
}

#[test]
fn run_mount_flags() {
    ok(
        "FROM a\nRUN --mount=type=cache,target=/c,id=x,sharing=locked --mount=type=secret,id=s --network=none --security=insecure make\n",
        &["FROM a", "RUN[shell] --mount=type=cache,target=/c,id=x,sharing=locked --mount=type=secret,id=s --network=none --security=insecure make"],
    );
    err(
        "FROM a\nRUN --mount=type=cache,targte=/c make\n",
        "Dockerfile:2:13: RUN: invalid value \"type=cache,targte=/c\" for --mount: unexpected key 'targte' in 'targte=/c' (did you mean target?)",
    );
    err(
        "FROM a\nRUN --network=bridge make\n",
        "Dockerfile:2:15: RUN: invalid value \"bridge\" for --network: expected one of default, none, host",
    );
}
