"""Prompt templates: the R1-Zero template (DeepSeek-R1, Table 1), the model's chat template, plain text.

A template is a name ("r1", "r1_tools", "chat", "plain") or any string that contains ``{question}``.
"""

from __future__ import annotations

from typing import Any

# DeepSeek-R1 (arXiv 2501.12948), Table 1, verbatim; "prompt" there is our {question}.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {question}. Assistant:"
)

# The R1-Zero template with one sentence that tells the model about the Python tool (docs/tools.md).
R1_TOOLS_TEMPLATE = R1_ZERO_TEMPLATE.replace(
    "User: {question}",
    "While thinking, the assistant can run Python: code within <python> </python> tags is run and what it "
    "prints is shown within <output> </output> tags. User: {question}",
)

PLAIN_TEMPLATE = "{question}"

TEMPLATES = {"r1": R1_ZERO_TEMPLATE, "r1_tools": R1_TOOLS_TEMPLATE, "plain": PLAIN_TEMPLATE, "chat": None}


def check_template(template: str) -> None:
    """Raise ValueError with a fix-it message if ``template`` is neither a known name nor has ``{question}``."""
    if template in TEMPLATES:
        return
    if "{question}" not in template:
        raise ValueError(
            f"template {template[:60]!r} is not one of {sorted(TEMPLATES)} and has no '{{question}}' placeholder; "
            "use a template name or put '{question}' where the problem text goes"
        )


def render_prompt(template: str, question: str, tokenizer: Any = None, system: str | None = None) -> str:
    """Fill a template with one question.

    >>> render_prompt("Q: {question}\\nA:", "1+1?")
    'Q: 1+1?\\nA:'
    >>> render_prompt("r1", "what is 2 plus 3").endswith("User: what is 2 plus 3. Assistant:")
    True
    """
    check_template(template)
    if template == "chat":
        if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "template 'chat' needs a tokenizer with a chat template; this tokenizer has none: "
                "use data.template=r1 or plain, or a tokenizer that ships a chat_template"
            )
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question}
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    fmt = TEMPLATES.get(template) or template
    # str.replace, not str.format: questions and templates may contain LaTeX braces.
    return fmt.replace("{question}", question)
