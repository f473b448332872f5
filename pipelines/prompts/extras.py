"""What happens to a request's prompts before they are encoded: styles, then LoRA tags and embeddings.

One context manager per job, shared by txt2img and img2img (A1111's order: styles are applied first, so
a style may carry `<lora:...>` tags; then extra-network tags are taken out of the positive prompt):

    with prompt_job(styles_db, networks, loaded.pipe, req) as job:
        encoder = job.encoder(pipe, req.clip_skip)       # PromptEncoder with the job's embeddings
        ... sample with job.encode_request ...             # prompt without network tags
        ... infotext from job.request + job.infotext() ... # final prompt (tags kept), Lora/TI hashes
    result.notices += job.notices                          # unknown styles, missing LoRAs, ...

On exit the pipe is the checkpoint's own again (LoRAs disabled/unfused, embedding hooks removed), also
when the job fails or is interrupted.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

from . import styles as styles_mod
from .conditioning import PromptEncoder
from .networks import NetworkJob, NetworkManager


@dataclass
class PromptJob:
    request: Any                   # styles applied: what the infotext and the result record
    encode_request: Any            # ... and network tags removed from the prompt: what is encoded
    networks: NetworkJob | None = None
    notices: list[str] = field(default_factory=list)

    def encoder(self, pipe, clip_skip: int) -> PromptEncoder:
        embeddings = self.networks.embeddings if self.networks is not None else None
        return PromptEncoder(pipe, clip_skip, embeddings=embeddings)

    def infotext(self) -> dict[str, str]:
        """Extra infotext pairs (`Lora hashes`, `TI hashes`); call after encoding (embeddings are
        known once the prompts have been tokenized)."""
        if self.networks is None:
            return {}
        extra = self.networks.infotext()
        self._collect()
        return extra

    def _collect(self) -> None:
        if self.networks is not None:
            for msg in self.networks.all_warnings():
                if msg not in self.notices:
                    self.notices.append(msg)


@contextlib.contextmanager
def prompt_job(styles: styles_mod.StyleDatabase | None, networks: NetworkManager | None, pipe,
               req) -> Iterator[PromptJob]:
    req, notices = styles_mod.apply_to_request(styles, req)
    if networks is None:
        yield PromptJob(req, req, None, notices)
        return
    with networks.activate(pipe, req.prompt) as net:
        job = PromptJob(req, req.replace(prompt=net.prompt), net, notices)
        try:
            yield job
        finally:
            job._collect()   # embedding warnings are known once the prompts were tokenized
