from hypothesis import given
from hypothesis import strategies as st

from seal_jax.domains.base import Invalid
from seal_jax.domains.knowledge.data import QA, make_passage
from seal_jax.domains.knowledge.sequences import MAX_SEQUENCES, build_sequences, passage_only_sequences

PASSAGE = make_passage("Varnholt", "  Varnholt is a lakeside town.  ", [QA("Where?", "lakeside")])
CTX = "Varnholt\nVarnholt is a lakeside town."


def titled(*texts: str) -> tuple[str, ...]:
    return tuple(f"Varnholt\n{t}" for t in texts)


def test_lines_become_sequences_with_title_and_passage_last():
    assert build_sequences(PASSAGE, "A fact.\n\n  Another fact.  \n") == (
        *titled("A fact.", "Another fact."),
        CTX,
    )


def test_header_line_before_numbered_list_is_dropped():
    text = "Sure, here are the implications:\n1. One.\n2. Two."
    assert build_sequences(PASSAGE, text) == (*titled("1. One.", "2. Two."), CTX)


def test_first_line_kept_when_second_is_not_item_one():
    text = "Intro line.\n2. Two.\n3. Three."
    assert build_sequences(PASSAGE, text) == (*titled("Intro line.", "2. Two.", "3. Three."), CTX)


def test_dashes_split_segments_without_newline_splitting():
    text = "Part one\nstill one\n---\n\n---\nPart two"
    got = build_sequences(PASSAGE, text, split_newlines=False)
    assert got == (*titled("Part one\nstill one", "Part two"), CTX)


def test_dashes_then_lines_with_newline_splitting():
    assert build_sequences(PASSAGE, "a\nb\n---\nc") == (*titled("a", "b", "c"), CTX)


def test_self_qa_split_before_each_question_and_first_prefixed():
    text = (
        "What is Varnholt?\nAnswer: A town.\nQuestion 2: Which lake?\nAnswer: Osk.\n\n"
        "Question 3: Why?\nAnswer: X."
    )
    expected = titled(
        "Question 1: What is Varnholt?\nAnswer: A town.",
        "Question 2: Which lake?\nAnswer: Osk.",
        "Question 3: Why?\nAnswer: X.",
    )
    assert build_sequences(PASSAGE, text) == (*expected, CTX)


def test_self_qa_first_chunk_not_prefixed_twice():
    got = build_sequences(PASSAGE, "Question 1: Q?\nAnswer: A.\nQuestion 2: R?\nAnswer: B.")
    assert got[0] == "Varnholt\nQuestion 1: Q?\nAnswer: A."


def test_self_qa_needs_split_newlines():
    text = "Question 1: Q?\nAnswer: A."
    assert build_sequences(PASSAGE, text, split_newlines=False) == (*titled(text), CTX)


def test_cot_keeps_only_the_implications_section():
    text = "Thought process:\nIt is a town.\nImplications:\n1. People live there.\n2. It has a lake."
    assert build_sequences(PASSAGE, text) == (*titled("1. People live there.", "2. It has a lake."), CTX)


def test_add_context_false_leaves_the_passage_out():
    assert build_sequences(PASSAGE, "x\ny", add_context=False) == titled("x", "y")


def test_cap_counts_self_edit_sequences_only():
    text = "\n".join(f"fact {i}" for i in range(45))
    got = build_sequences(PASSAGE, text)
    assert len(got) == MAX_SEQUENCES + 1 and got[-2] == "Varnholt\nfact 29" and got[-1] == CTX
    assert build_sequences(PASSAGE, text, max_sequences=3) == (*titled("fact 0", "fact 1", "fact 2"), CTX)


def test_empty_self_edits_are_invalid():
    for text in ["", "   \n\t\n", "---\n---", "Thoughts.\nImplications:\n   "]:
        for split in (True, False):
            assert isinstance(build_sequences(PASSAGE, text, split_newlines=split), Invalid), (text, split)


def test_passage_only():
    assert passage_only_sequences(PASSAGE) == (CTX,)


@given(
    st.text(alphabet=st.sampled_from("ab1. \n-:QuestionAnswer"), max_size=200), st.booleans(), st.booleans()
)
def test_any_text_gives_titled_sequences_or_invalid(text, split_newlines, add_context):
    got = build_sequences(
        PASSAGE, text, split_newlines=split_newlines, add_context=add_context, max_sequences=5
    )
    if isinstance(got, Invalid):
        assert not text.replace("---", "").strip() or "Implications:" in text
        return
    assert all(s.startswith("Varnholt\n") and s.strip() != "Varnholt" for s in got)
    assert len(got) <= 5 + add_context
    assert (got[-1] == CTX) == add_context
