//! Planner behaviour: ARG scoping, stage references, `--target` pruning and build waves.

use kiln_dockerfile::instructions::Command;
use kiln_dockerfile::plan::ArgSource;
use kiln_dockerfile::{plan, Base, Dockerfile, Plan, PlanOptions, Platform};
use std::collections::BTreeMap;

fn options(args: &[(&str, &str)], target: Option<&str>) -> PlanOptions {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_string),
        build_platform: amd64,
        target_platform: Platform::parse_flag("linux/arm/v7").unwrap(),
        ..PlanOptions::default()
    }
}

fn planned(text: &str, options: &PlanOptions) -> Result<Plan, String> {
    let df = Dockerfile::parse(text, "Dockerfile").map_err(|e| e.to_string())?;
    plan(&df, options).map_err(|e| e.to_string())
}

fn texts(plan: &Plan, stage: usize) -> Vec<String> {
    plan.stages
        .iter()
        .find(|s| s.index == stage)
        .unwrap()
        .instructions
        .iter()
        .map(|i| i.command.to_string())
        .collect()
}

#[test]
fn global_args_reach_from_but_not_the_stage_unless_redeclared() {
    let text =
        "ARG TAG=1.36\nARG IMG=busybox:${TAG}\nFROM ${IMG}\nENV A=${TAG}\nARG TAG\nENV B=${TAG}\n";
    let p = planned(text, &options(&[], None)).unwrap();
    assert_eq!(
        p.stages[0].base,
        Base::Image {
            reference: "busybox:1.36".into()
        }
    );
    // Before `ARG TAG` inside the stage, TAG is not set (kept as written: the base image's
    // environment is unknown before the pull); after, it has the global value.
    assert_eq!(
        texts(&p, 0),
        ["ENV A=\"${TAG}\"", "ARG TAG=1.36", "ENV B=1.36"]
    );
    assert_eq!(p.stages[0].args[0].source, ArgSource::Global);
}

#[test]
fn build_args_override_defaults_everywhere() {
    let text = "ARG V=1\nFROM busybox:$V\nARG V\nARG W=default\nRUN echo $V $W\nLABEL v=$V w=$W\n";
    let p = planned(text, &options(&[("V", "2"), ("W", "given")], None)).unwrap();
    assert_eq!(
        p.stages[0].base,
        Base::Image {
            reference: "busybox:2".into()
        }
    );
    assert_eq!(texts(&p, 0)[3], "LABEL v=2 w=given");
    // RUN text is never expanded by the builder.
    assert_eq!(texts(&p, 0)[2], "RUN echo $V $W");
}

#[test]
fn platform_args_are_global_and_need_declaring_in_stages() {
    let text = "FROM --platform=$BUILDPLATFORM busybox AS b\nARG TARGETARCH TARGETVARIANT\nENV T=$TARGETARCH/$TARGETVARIANT P=$TARGETPLATFORM\n";
    let p = planned(text, &options(&[], None)).unwrap();
    assert_eq!(p.stages[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(texts(&p, 0)[1], "ENV T=arm/v7 P=\"$TARGETPLATFORM\"");
    assert_eq!(p.stages[0].unresolved, ["TARGETPLATFORM"]);
}

#[test]
fn a_stage_built_from_another_inherits_its_env_and_args() {
    let text = "FROM scratch AS base\nARG A=1\nENV E=2\nFROM base\nLABEL a=$A e=$E u=$UNSET\n";
    let p = planned(text, &options(&[], None)).unwrap();
    assert_eq!(
        p.stages[1].base,
        Base::Stage {
            index: 0,
            name: Some("base".into())
        }
    );
    // From scratch, every variable is known: unset ones expand to nothing.
    assert_eq!(texts(&p, 1), ["LABEL a=1 e=2 u=\"\""]);
}

#[test]
fn env_values_within_one_instruction_use_the_old_values() {
    let text = "FROM scratch\nENV A=1\nENV A=2 B=$A\nENV C=$A$B\n";
    let p = planned(text, &options(&[], None)).unwrap();
    assert_eq!(texts(&p, 0), ["ENV A=1", "ENV A=2 B=1", "ENV C=21"]);
}

#[test]
fn arg_defaults_see_earlier_args_of_the_same_instruction() {
    let text = "FROM scratch\nARG A=1 B=$A\nLABEL b=$B\n";
    let p = planned(text, &options(&[], None)).unwrap();
    assert_eq!(texts(&p, 0)[1], "LABEL b=1");
}

#[test]
fn target_prunes_and_waves_allow_parallel_stages() {
    let text = "FROM busybox AS a\nFROM busybox AS b\nFROM busybox AS unused\nFROM scratch AS final\nCOPY --from=a / /a\nCOPY --from=1 / /b\nRUN --mount=type=bind,from=nginx:1.25,target=/n true\n";
    let p = planned(text, &options(&[], Some("FINAL"))).unwrap();
    assert_eq!(p.target, 3);
    assert_eq!(
        p.stages.iter().map(|s| s.index).collect::<Vec<_>>(),
        [0, 1, 3]
    );
    assert_eq!(p.skipped_stages.len(), 1);
    assert_eq!(p.stages[2].depends_on, [0, 1]);
    assert_eq!(p.stages[2].images, ["nginx:1.25"]);
    assert_eq!(p.build_order, vec![vec![0, 1], vec![3]]);
    let p = planned(text, &options(&[], Some("b"))).unwrap();
    assert_eq!(p.stages.len(), 1);
    assert_eq!(p.build_order, vec![vec![1]]);
}

#[test]
fn copy_from_an_image_is_not_a_stage() {
    let p = planned(
        "FROM scratch\nCOPY --from=nginx:1.25 /etc/nginx /n\n",
        &options(&[], None),
    )
    .unwrap();
    assert!(p.stages[0].depends_on.is_empty());
    assert_eq!(p.stages[0].images, ["nginx:1.25"]);
}

#[test]
fn bad_stage_references_are_errors() {
    let o = options(&[], None);
    assert_eq!(
        planned("FROM busybox AS a\nCOPY --from=b / /\nFROM busybox AS b\n", &o).unwrap_err(),
        "Dockerfile:2:13: COPY: cannot copy from stage \"b\", it needs to be defined before current stage \"a\" (it is at line 3)"
    );
    assert_eq!(
        planned("FROM busybox AS a\nCOPY --from=a / /\n", &o).unwrap_err(),
        "Dockerfile:2:13: COPY: circular dependency detected on stage \"a\": a stage cannot read its own files"
    );
    assert_eq!(
        planned("FROM busybox\nFROM busybox\nCOPY --from=5 / /\n", &o).unwrap_err(),
        "Dockerfile:3:13: COPY: invalid stage index 5: the Dockerfile has 2 stages, numbered from 0"
    );
    assert_eq!(
        planned("FROM busybox\nCOPY --from=1 / /\nFROM busybox\n", &o).unwrap_err(),
        "Dockerfile:2:13: COPY: cannot copy from stage 1, it needs to be defined before current stage 0"
    );
    assert_eq!(
        planned("FROM later\nFROM busybox AS later\n", &o).unwrap_err(),
        "Dockerfile:1:6: FROM: stage \"later\" is defined later (line 2): a stage can only be based on stages defined before it"
    );
    assert_eq!(
        planned("FROM busybox AS builder\nFROM scratch\nCOPY --from=Bilder / /\n", &o).unwrap_err(),
        "Dockerfile:3:13: COPY: --from=Bilder is neither a stage name nor a valid image reference: repository name must be lowercase (got \"Bilder\") (did you mean stage \"builder\"?)"
    );
    assert_eq!(
        planned("ARG X\nFROM busybox\nCOPY --from=$X / /\n", &o).unwrap_err(),
        "Dockerfile:3:13: COPY: --from=$X doesn't support variable expansion: define an alias stage (`FROM ${IMAGE} AS src`) and use --from=src"
    );
    assert_eq!(
        planned("FROM busybox AS a\n", &options(&[], Some("nope"))).unwrap_err(),
        "Dockerfile: target stage \"nope\" could not be found (stages: a)"
    );
    assert_eq!(
        planned("ARG EMPTY\nFROM $EMPTY\n", &o).unwrap_err(),
        "Dockerfile:2:6: FROM: base name ($EMPTY) should not be blank"
    );
}

#[test]
fn stage_names_match_case_insensitively() {
    let p = planned("FROM busybox AS Build\nFROM BUILD\n", &options(&[], None)).unwrap();
    assert_eq!(
        p.stages[1].base,
        Base::Stage {
            index: 0,
            name: Some("build".into())
        }
    );
}

#[test]
fn unused_build_args_are_warned_about_but_proxy_args_are_not() {
    let p = planned(
        "FROM busybox\nARG USED\n",
        &options(
            &[
                ("USED", "1"),
                ("UNUSED", "2"),
                ("HTTP_PROXY", "http://u:secret@proxy:3128"),
            ],
            None,
        ),
    )
    .unwrap();
    let warnings: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        warnings,
        ["build-arg was [UNUSED] not consumed: no ARG in the stages being built declares it"]
    );
    assert_eq!(p.proxy_args, ["HTTP_PROXY"]);
    let json = serde_json::to_string(&p).unwrap();
    assert!(
        !json.contains("secret"),
        "proxy values (which may hold credentials) stay out of the plan"
    );
}

#[test]
fn expansion_errors_point_at_the_word() {
    assert_eq!(
        planned("FROM scratch\nENV A=${B:?required}\n", &options(&[], None)).unwrap_err(),
        "Dockerfile:2:7: ENV: B: required"
    );
    assert_eq!(
        planned("FROM scratch\nWORKDIR /a/${B\n", &options(&[], None)).unwrap_err(),
        "Dockerfile:2:12: WORKDIR: syntax error: missing '}'"
    );
}

#[test]
fn copy_heredoc_bodies_expand_unless_quoted() {
    let p = planned(
        "FROM scratch\nARG NAME=world\nCOPY <<EOF <<'RAW' /d/\nhello \"$NAME\"\nEOF\nhello $NAME\nRAW\n",
        &options(&[], None),
    )
    .unwrap();
    let Command::Copy(copy) = &p.stages[0].instructions[1].command else {
        panic!("not a COPY")
    };
    assert_eq!(copy.inline[0].content, "hello \"world\"\n");
    assert_eq!(copy.inline[1].content, "hello $NAME\n");
}

#[test]
fn a_stage_named_like_its_base_image_uses_the_image() {
    let p = planned("FROM nginx AS nginx\nFROM nginx\n", &options(&[], None)).unwrap();
    assert_eq!(
        p.stages[0].base,
        Base::Image {
            reference: "nginx".into()
        }
    );
    assert_eq!(
        p.stages[1].base,
        Base::Stage {
            index: 0,
            name: Some("nginx".into())
        }
    );
}

#[test]
fn mount_from_names_never_indexes_and_scratch_reads_nothing() {
    let text =
        "FROM busybox\nFROM busybox\nRUN --mount=from=0,target=/x true\nCOPY --from=scratch / /\n";
    let p = planned(text, &options(&[], None)).unwrap();
    assert!(p.stages[0].depends_on.is_empty());
    assert_eq!(p.stages[0].images, ["0"]);
}

#[test]
fn onbuild_triggers_of_a_base_stage_run_first_with_their_dependencies() {
    let text = "FROM busybox AS assets\nFROM busybox AS base\nONBUILD ARG MODE=prod\nONBUILD COPY --from=assets /a /a\nONBUILD LABEL mode=$MODE\nFROM base\nLABEL x=1\n";
    let p = planned(text, &options(&[], None)).unwrap();
    let last = p.stages.last().unwrap();
    assert_eq!(last.depends_on, [0, 1]);
    let triggers: Vec<String> = last.onbuild.iter().map(|i| i.command.to_string()).collect();
    assert_eq!(
        triggers,
        [
            "ARG MODE=prod",
            "COPY --from=assets /a /a",
            "LABEL mode=prod"
        ]
    );
    assert_eq!(texts(&p, 2), ["LABEL x=1"]);
}

#[test]
fn invalid_onbuild_triggers_warn_and_fail_only_where_used() {
    let text = "FROM busybox AS base\nONBUILD COPY onlyone\nFROM busybox\n";
    let p = planned(text, &options(&[], None)).unwrap();
    assert!(
        p.warnings.iter().any(|w| w.rule == "InvalidOnbuildTrigger"),
        "{:?}",
        p.warnings
    );
    let err = planned(
        "FROM busybox AS base\nONBUILD COPY onlyone\nFROM base\n",
        &options(&[], None),
    )
    .unwrap_err();
    assert!(err.starts_with("Dockerfile:2:1: ONBUILD: trigger of the base stage cannot run: COPY: COPY requires at least two"), "{err}");
}

#[test]
fn global_arg_redeclared_without_value_keeps_it_and_platform_args_can_be_overridden() {
    let text = "ARG IMG=busybox\nARG IMG\nFROM $IMG:$TARGETARCH\n";
    let p = planned(text, &options(&[("TARGETARCH", "riscv64")], None)).unwrap();
    assert_eq!(
        p.stages[0].base,
        Base::Image {
            reference: "busybox:riscv64".into()
        }
    );
}

#[test]
fn scratch_stages_have_the_default_path() {
    let p = planned("FROM scratch\nENV PATH=$PATH:/app\n", &options(&[], None)).unwrap();
    assert_eq!(
        texts(&p, 0),
        ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/app"]
    );
}

#[test]
fn empty_flag_values_mean_unset() {
    let p = planned(
        "FROM --platform= busybox\nCOPY --from= --chmod= a /b\n",
        &options(&[], None),
    )
    .unwrap();
    assert_eq!(p.stages[0].platform, None);
    assert_eq!(texts(&p, 0), ["COPY a /b"]);
}

#[test]
fn mounts_are_checked_once_expanded_and_only_in_needed_stages() {
    let text = "FROM busybox AS unused\nRUN --mount=type=bogus,target=/x true\nFROM busybox\nARG T=cache\nRUN --mount=type=$T,target=/c true\n";
    let p = planned(text, &options(&[], None)).unwrap();
    let kiln_dockerfile::Command::Run { mounts, .. } = &p.stages[0].instructions[1].command else {
        panic!("not RUN")
    };
    assert_eq!(mounts[0].kind, kiln_dockerfile::mount::MountType::Cache);
    let err = planned(text, &options(&[], Some("unused"))).unwrap_err();
    assert!(err.starts_with("Dockerfile:2:13: RUN: invalid value \"type=bogus,target=/x\" for --mount: unsupported mount type"), "{err}");
}

#[test]
fn platforms_normalise_like_containerd() {
    let p = |s: &str| Platform::parse_flag(s).unwrap().to_string();
    assert_eq!(p("linux/x86_64"), "linux/amd64");
    assert_eq!(p("linux/aarch64"), "linux/arm64");
    assert_eq!(p("linux/arm64/v8"), "linux/arm64");
    assert_eq!(p("linux/arm"), "linux/arm/v7");
    assert_eq!(p("linux/arm/7"), "linux/arm/v7");
    assert_eq!(p("arm64"), "linux/arm64");
    assert_eq!(p("macos/arm64"), "darwin/arm64");
    assert_eq!(
        p("linux"),
        format!("linux/{}", Platform::host().architecture)
    );
    assert!(Platform::parse_flag("linux//amd64").is_err());
    assert!(Platform::parse_flag("a/b/c/d").is_err());
}

/// Thousands of global ARGs, each default using the one before: every value is right, and the
/// planner does not copy the global ARGs per declaration (that was quadratic: 20,000 global ARGs
/// took over a minute).
#[test]
fn thousands_of_chained_global_args_plan_in_linear_time() {
    let n = 20_000;
    let mut text = String::from("ARG A0=x\n");
    for i in 1..n {
        text.push_str(&format!("ARG A{i}=${{A{}}}\n", i - 1));
    }
    text.push_str(&format!(
        "FROM scratch\nARG A{}\nENV LAST=$A{}\n",
        n - 1,
        n - 1
    ));
    let started = std::time::Instant::now();
    let plan = planned(&text, &options(&[], None)).unwrap();
    assert_eq!(plan.global_args.len(), n);
    assert!(plan
        .global_args
        .iter()
        .all(|a| a.value.as_deref() == Some("x")));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
