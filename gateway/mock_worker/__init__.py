"""The bundled fake worker: an OpenAI-compatible model server for trials, demos and tests.

``server`` is the HTTP side (routes, failure markers, the :class:`MockState` tests read);
``plan`` decides what to answer (pure), ``wire`` turns a plan into bytes, ``apis`` serves the
non-chat APIs (completions, embeddings, rerank and score, audio, images, ``/tokenize``) and
``shapes`` builds their bodies in vLLM's shapes.
"""

from gateway.mock_worker.server import MOCK_STATE, MockOptions, MockState, create_app, run, start

__all__ = ["MOCK_STATE", "MockOptions", "MockState", "create_app", "run", "start"]
