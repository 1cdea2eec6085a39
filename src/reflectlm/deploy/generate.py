"""Streamed generation: one input's answer decoded by the served model, its text handed out piece
by piece while the model decodes (transformers' TextIteratorStreamer), and trimmed so that the
pieces join to exactly the output the task records (it strips the answer's outer whitespace).

The prompt is the task's own (task.encode, with the bundle's options), so a streamed answer is the
one `predict` gives for a greedy model. No web framework here: serve/app.py turns the pieces into
server-sent events and runs `generate_streamed` on its model thread.
"""

from __future__ import annotations

from typing import Iterable, Iterator

END = object()  # what next(pieces, END) returns once the answer is complete


def text_streamer(tokenizer, timeout_s: float | None):
    """An iterator over the decoded text pieces of the next generate() it is passed to; a reader
    waiting longer than timeout_s for a piece gets queue.Empty."""
    from transformers import TextIteratorStreamer

    return TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=timeout_s, skip_special_tokens=True)


def generate_streamed(predictor, text: str, streamer) -> dict:
    """The task's output for one text ({"text", "tokens", "logprob", "entropy", "seconds"}), each
    decoded piece pushed to `streamer` meanwhile; blocks until the answer is complete. A failure
    closes the stream as well, so that its reader stops at once instead of at the timeout."""
    try:
        task = predictor.spec
        if predictor.model is None:
            raise RuntimeError(f"this backend ({predictor.info.get('format')}) cannot decode a {task.name} model "
                               "step by step: serve the run or a PyTorch export")
        ds = task.from_inputs([text])
        feature = task.encode(predictor.tokenizer, ds, None, predictor.max_length, **predictor.options)[0]
        return task.stream(predictor.model, predictor.tokenizer, feature, streamer, **predictor.options)
    except BaseException:
        streamer.end()
        raise


def trimmed(pieces: Iterable[str]) -> Iterator[str]:
    """The pieces without the answer's leading and trailing whitespace and without empty pieces:
    whitespace inside the answer is held back until the text after it arrives."""
    held, started = "", False
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        body = piece.rstrip()
        if body:
            yield held + body
            held = piece[len(body):]
        else:
            held += piece
