//! The typed Dockerfile: global ARGs and stages.

use crate::error::{Error, ErrorKind, Located, Warning};
use crate::instructions::{Command, Instruction, Typer};
use crate::parser::{self, Directives};
use crate::span::Span;
use serde::Serialize;

/// One `FROM` and the instructions after it, up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// 0-based position among the stages (what `COPY --from=0` refers to).
    pub index: usize,
    /// The name after `AS`, lower-cased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The FROM instruction itself.
    pub from: Instruction,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// From the FROM keyword to the end of the stage's last instruction.
    pub fn span(&self) -> Span {
        Span {
            start: self.from.span.start,
            end: self
                .instructions
                .last()
                .map_or(self.from.span.end, |i| i.span.end),
        }
    }

    /// `name` or, for unnamed stages, `stage N`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("stage {}", self.index),
        }
    }
}

/// A parsed and typed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The file name used in errors.
    pub file: String,
    /// Parser directives.
    pub directives: Directives,
    /// ARG instructions before the first FROM.
    pub global_args: Vec<Instruction>,
    /// The stages in file order.
    pub stages: Vec<Stage>,
    /// Legal oddities worth telling the author.
    pub warnings: Vec<Warning>,
}

impl Dockerfile {
    /// Parses and types `text`; `file` names it in errors (`Dockerfile:3:1: …`).
    pub fn parse(text: &str, file: &str) -> Result<Dockerfile, Error> {
        Self::parse_located(text)
            .map_err(|e| e.into_error(file))
            .map(|mut d| {
                d.file = file.to_string();
                d
            })
    }

    fn parse_located(text: &str) -> Result<Dockerfile, Located> {
        let ast = parser::parse(text)?;
        let mut warnings = ast.warnings;
        let mut typer = Typer {
            warnings: &mut warnings,
        };
        let mut global_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for node in &ast.nodes {
            let instruction = typer.instruction(node)?;
            match (&instruction.command, stages.last_mut()) {
                (Command::From { stage_name, .. }, _) => {
                    if let Some(name) = stage_name {
                        if let Some(previous) =
                            stages.iter().find(|s| s.name.as_ref() == Some(name))
                        {
                            return Err(Located::new(
                                instruction.span.start,
                                Some("FROM"),
                                ErrorKind::Stage(format!(
                                    "duplicate stage name {name:?}: already used by the stage at line {}",
                                    previous.from.span.start.line
                                )),
                            ));
                        }
                        if name == "scratch" || name == "context" {
                            typer.warnings.push(Warning {
                                pos: instruction.span.start,
                                rule: "ReservedStageName",
                                message: format!(
                                    "stage name {name:?} is reserved and should not be used"
                                ),
                            });
                        }
                    }
                    stages.push(Stage {
                        index: stages.len(),
                        name: stage_name.clone(),
                        from: instruction,
                        instructions: Vec::new(),
                    });
                }
                (Command::Arg { .. }, None) => global_args.push(instruction),
                (_, None) => return Err(Located::new(
                    instruction.span.start,
                    Some(instruction.keyword()),
                    ErrorKind::Stage(
                        "no build stage in current context: the first instruction must be FROM \
                             (only ARG and parser directives may come before it)"
                            .into(),
                    ),
                )),
                (_, Some(stage)) => stage.instructions.push(instruction),
            }
        }
        if stages.is_empty() {
            let pos = global_args.last().map(|a| a.span.start).unwrap_or_default();
            return Err(Located::new(
                pos,
                None,
                ErrorKind::Stage(
                    "the Dockerfile has no FROM instruction: add one after the global ARGs".into(),
                ),
            ));
        }
        Ok(Dockerfile {
            file: String::new(),
            directives: ast.directives,
            global_args,
            stages,
            warnings,
        })
    }
}
