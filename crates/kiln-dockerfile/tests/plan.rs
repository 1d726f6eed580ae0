//! Planner behaviour: ARG scoping, stage references, `--target` pruning and build waves.

use kiln_dockerfile::instructions::Command;
use kiln_dockerfile::plan::ArgSource;
use kiln_dockerfile::{plan, Base, Dockerfile, Plan, PlanOptions, Platform};
use std::collections::BTreeMap;

fn options(args: &[(&str, &str)], target: Option<&str>) -> PlanOptions {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    PlanOptions {
        build_args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        target: target.map(str::to_string),
        build_platform: amd64,
        target_platform: Platform::parse("linux/arm/v7").unwrap(),
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
    let text = "ARG TAG=1.36\nARG IMG=busybox:${TAG}\nFROM ${IMG}\nENV A=${TAG}\nARG TAG\nENV B=${TAG}\n";
    let p = planned(text, &options(&[], None)).unwrap();
    assert_eq!(p.stages[0].base, Base::Image { reference: "busybox:1.36".into() });
    // Before `ARG TAG` inside the stage, TAG is not set (kept as written: the base image's
    // environment is unknown before the pull); after, it has the global value.
    assert_eq!(texts(&p, 0), ["ENV A=\"${TAG}\"", "ARG TAG=1.36", "ENV B=1.36"]);
    assert_eq!(p.stages[0].args[0].source, ArgSource::Global);
}

#[test]
fn build_args_override_defaults_everywhere() {
    let text = "ARG V=1\nFROM busybox:$V\nARG V\nARG W=default\nRUN echo $V $W\nLABEL v=$V w=$W\n";
    let p = planned(text, &options(&[("V", "2"), ("W", "given")], None)).unwrap();
    assert_eq!(p.stages[0].base, Base::Image { reference: "busybox:2".into() });
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
    assert_eq!(p.stages[1].base, Base::Stage { index: 0, name: Some("base".into()) });
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
    assert_eq!(p.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1, 3]);
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
    let p = planned("FROM scratch\nCOPY --from=nginx:1.25 /etc/nginx /n\n", &options(&[], None)).unwrap();
    assert!(p.stages[0].depends_on.is_empty());
    assert_eq!(p.stages[0].images, ["nginx:1.25"]);
}

#[test]
fn bad_stage_references_are_errors() {
    let o = options(&[], None);
    assert_eq!(
        planned("FROM busybox AS a\nCOPY --from=b / /\nFROM busybox AS b\n", &o).unwrap_err(),
        "Dockerfile:2:13: COPY: stage \"b\" is defined later (line 3); a stage can only use stages defined before it"
    );
    assert_eq!(
        planned("FROM busybox AS a\nCOPY --from=a / /\n", &o).unwrap_err(),
        "Dockerfile:2:13: COPY: circular dependency: stage \"a\" refers to itself"
    );
    assert_eq!(
        planned("FROM busybox\nFROM busybox\nCOPY --from=5 / /\n", &o).unwrap_err(),
        "Dockerfile:3:13: COPY: --from=5: there is no stage 5 (the Dockerfile has 2 stages, numbered from 0)"
    );
    assert_eq!(
        planned("FROM busybox\nCOPY --from=1 / /\nFROM busybox\n", &o).unwrap_err(),
        "Dockerfile:2:13: COPY: --from=1 refers to a stage defined later; a stage can only use stages defined before it"
    );
    assert_eq!(
        planned("FROM later\nFROM busybox AS later\n", &o).unwrap_err(),
        "Dockerfile:1:6: FROM: stage \"later\" is defined later (line 2); a stage can only use stages defined before it"
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
    assert_eq!(p.stages[1].base, Base::Stage { index: 0, name: Some("build".into()) });
}

#[test]
fn unused_build_args_are_warned_about_but_proxy_args_are_not() {
    let p = planned(
        "FROM busybox\nARG USED\n",
        &options(&[("USED", "1"), ("UNUSED", "2"), ("HTTP_PROXY", "http://u:secret@proxy:3128")], None),
    )
    .unwrap();
    let warnings: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(warnings, ["build-arg was [UNUSED] not consumed: no ARG in the stages being built declares it"]);
    assert_eq!(p.proxy_args, ["HTTP_PROXY"]);
    let json = serde_json::to_string(&p).unwrap();
    assert!(!json.contains("secret"), "proxy values (which may hold credentials) stay out of the plan");
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
