//! Parse + plan of a large generated Dockerfile: `cargo run --release -p kiln-bench --bin
//! dockerfile-parse [STAGES] [RUNS]`. Prints a Markdown table row per size.

#![allow(clippy::print_stdout)]

use kiln_bench::{summary_ms, time_runs};
use kiln_dockerfile::{plan, Dockerfile, PlanOptions, Platform};
use std::fmt::Write;

/// A Dockerfile of `stages` stages, each with 40 instructions of every common kind: ARG/ENV
/// expansion, continuations with comments, heredocs, RUN --mount, COPY --from earlier stages.
fn generate(stages: usize) -> String {
    let mut d = String::from(
        "# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm-slim\nARG VERSION=1.0\n",
    );
    for s in 0..stages {
        writeln!(d, "FROM ${{BASE}} AS stage{s}").unwrap();
        writeln!(d, "ARG VERSION\nARG N{s}=value-{s}").unwrap();
        for i in 0..4 {
            writeln!(d, "ENV PATH_{i}=/opt/${{N{s}}}/bin:$PATH HOME_{i}=\"/home/user {i}\" V=${{VERSION%.*}}").unwrap();
            writeln!(
                d,
                "RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n    apt-get update && \\\n    # install tools\n    apt-get install -y --no-install-recommends curl ca-certificates git \\\n      build-essential && rm -rf /var/lib/apt/lists/*"
            )
            .unwrap();
            writeln!(d, "WORKDIR /src/${{N{s}}}/{i}").unwrap();
            writeln!(d, "COPY --chown=1000:1000 --chmod=0644 src/{i}/ ./{i}/").unwrap();
            if s > 0 {
                writeln!(d, "COPY --from=stage{} /out/ /in/{i}/", s - 1).unwrap();
            }
            writeln!(
                d,
                "LABEL org.example.stage=\"{s}\" org.example.step={i} version=${{VERSION}}"
            )
            .unwrap();
            writeln!(
                d,
                "RUN <<EOF\nset -e\necho building {s}.{i}\nmake -j2 all\nEOF"
            )
            .unwrap();
            writeln!(
                d,
                "COPY <<CONF /etc/app-{i}.conf\nname=${{N{s}}}\nversion=$VERSION\nCONF"
            )
            .unwrap();
            writeln!(d, "EXPOSE 80{i:02}/tcp 90{i:02}/udp").unwrap();
            writeln!(d, "USER 1000:1000").unwrap();
        }
        writeln!(
            d,
            "HEALTHCHECK --interval=30s --timeout=3s CMD curl -f http://localhost/ || exit 1"
        )
        .unwrap();
        writeln!(
            d,
            "ENTRYPOINT [\"/usr/bin/app\", \"--stage\", \"{s}\"]\nCMD [\"serve\"]"
        )
        .unwrap();
    }
    d
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = match args.get(1) {
        Some(n) => vec![n.parse().expect("STAGES must be a number")],
        None => vec![10, 100, 1000],
    };
    let runs: usize = args
        .get(2)
        .map_or(11, |r| r.parse().expect("RUNS must be a number"));
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let options = PlanOptions {
        build_platform: amd64.clone(),
        target_platform: amd64,
        ..PlanOptions::default()
    };
    println!("| stages | lines | bytes | instructions | parse+plan median (min–max) | MiB/s |");
    println!("|---:|---:|---:|---:|---|---:|");
    for stages in sizes {
        let text = generate(stages);
        let df = Dockerfile::parse(&text, "Dockerfile").expect("generated Dockerfile parses");
        let instructions: usize = df.stages.iter().map(|s| s.instructions.len() + 1).sum();
        let p = plan(&df, &options).expect("generated Dockerfile plans");
        assert_eq!(
            p.stages.len(),
            stages,
            "every stage is needed by the last one"
        );
        let times = time_runs(runs, || {
            let df = Dockerfile::parse(&text, "Dockerfile").unwrap();
            std::hint::black_box(plan(&df, &options).unwrap());
        });
        let (median, min, max) = summary_ms(&times);
        let mib_s = text.len() as f64 / (1 << 20) as f64 / (median / 1e3);
        println!(
            "| {stages} | {} | {} | {instructions} | {median:.1} ms ({min:.1}–{max:.1}) | {mib_s:.1} |",
            text.lines().count(),
            text.len()
        );
    }
}
