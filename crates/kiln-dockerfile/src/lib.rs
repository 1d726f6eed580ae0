/*!
The Dockerfile frontend of kiln: it reads Dockerfiles exactly as `docker build` (BuildKit's
Dockerfile frontend) does, and plans what to build.

It works in stages that can each be used and tested alone, as BuildKit's frontend does:

1. [`parser`]: lines to [`parser::Node`]s — parser directives (`# syntax`, `# escape`,
   `# check`), line continuations with interleaved comments, `--flags`, JSON (exec) vs shell form
   with BuildKit's fallback, heredocs (`<<EOF`, `<<-EOF`, quoted delimiters).
2. [`instructions`]: nodes to typed [`Instruction`]s with validated flags (`RUN --mount`,
   `COPY --chmod`, `HEALTHCHECK --interval`, …), grouped into [`Stage`]s by [`Dockerfile::parse`].
3. [`shell`]: BuildKit's word expansion (`${v:-w}`, `${v#p}`, `${v//p/r}`, quotes, escapes).
4. [`plan()`]: ARG scoping, FROM expansion, stage references (name, index or image), the
   dependency graph, `--target` pruning and expansion of every needed stage into a [`Plan`].

[`ignore`] implements `.dockerignore` (moby's pattern rules) and a walker that skips excluded
directories whole.

The crate does no I/O: callers hand it text and directory listings.
Depends only on kiln-oci (the image-reference grammar it shares with the registry client).
Must not depend on: kiln-registry, kiln-fs, kiln-sandbox, kiln-build, kiln.

```
use kiln_dockerfile::{Dockerfile, PlanOptions, plan};

let text = "ARG V=1.36\nFROM busybox:${V} AS base\nFROM base\nCOPY --from=base /bin/sh /sh\n";
let dockerfile = Dockerfile::parse(text, "Dockerfile").unwrap();
let plan = plan(&dockerfile, &PlanOptions::default()).unwrap();
assert_eq!(plan.stages.len(), 2);
assert_eq!(plan.stages[1].depends_on, vec![0]);
```
*/
#![deny(missing_docs)]

mod display;
mod dockerfile;
mod error;
pub mod expand;
pub mod ignore;
pub mod instructions;
pub mod mount;
pub mod parser;
pub mod plan;
mod reference;
pub mod shell;
mod span;

pub use dockerfile::{Dockerfile, Stage};
pub use error::{Error, ErrorKind, Located, Warning};
pub use instructions::{Command, CommandLine, Instruction, Word};
pub use plan::{plan, Base, BaseImage, Plan, PlanOptions, PlannedStage, Platform};
pub use reference::check_image_reference;
pub use span::{Pos, Span};
