"""``mrlkit demo``: offline, no arguments, the bundled model, real numbers.

Example::

    >>> result = similarity_demo()  # doctest: +SKIP
    >>> [r["dim"] for r in result["rows"]]  # doctest: +SKIP
    [32, 64, 128, 192, 256, 384]
"""

from __future__ import annotations

from .embedder import Embedder
from .evaluation.similarity import pair_similarity_table
from .registry import get_spec

# Paraphrases and loosely related pairs, so that pair similarities vary and their
# ordering can be checked at each dimension.
PAIRS: list[tuple[str, str]] = [
    ("A man is playing a guitar.", "A person plays an acoustic guitar."),
    ("The cat sleeps on the sofa.", "A kitten is napping on the couch."),
    ("How do I reset my password?", "I forgot my password and need a new one."),
    ("The stock market fell sharply today.", "Share prices dropped steeply this afternoon."),
    ("She is cooking pasta for dinner.", "A woman prepares spaghetti in the kitchen."),
    ("The train to Berlin is delayed.", "Our railway connection to Berlin is running late."),
    ("Vaccines train the immune system.", "Immunisation teaches the body to fight pathogens."),
    ("Solar panels convert sunlight into electricity.", "Photovoltaic cells generate power from light."),
    ("The child is reading a book.", "A kid looks at pictures in a magazine."),
    ("He parked the car in the garage.", "The vehicle was left on the street."),
    ("Python is a programming language.", "Snakes are reptiles without legs."),
    ("The museum opens at nine.", "Opening hours of the gallery start at 9 am."),
    ("Heavy rain caused flooding in the valley.", "The river overflowed after days of storms."),
    ("I would like a cup of coffee.", "Could I get an espresso, please?"),
    ("The team won the championship.", "They lost the final match."),
    ("A dog runs across the field.", "The stock exchange closed early."),
    ("The laptop battery drains quickly.", "My notebook computer loses charge fast."),
    ("Mount Everest is the highest mountain.", "No peak on Earth is taller than Everest."),
    ("The recipe needs two eggs.", "Quantum computers use qubits."),
    ("Please close the window.", "Open the door, please."),
    ("The bank approved my loan.", "My mortgage application was accepted."),
    ("Birds migrate south in winter.", "Many species fly to warmer regions when it gets cold."),
    ("The concert was cancelled.", "The show will not take place."),
    ("Water boils at 100 degrees Celsius.", "At sea level, water turns to steam at 100 °C."),
]


def similarity_demo(model: str = "all-MiniLM-L6-v2", dims: list[int] | None = None) -> dict:
    """Embed :data:`PAIRS` once at full dimension and measure every prefix.

    Truncation is a prefix of the stored vector, so one model call serves every row.
    """
    spec = get_spec(model)
    dims = dims or sorted(set(spec.default_dims()) | ({192} if spec.native_dim == 384 else set()))
    embedder = Embedder(spec)
    left = embedder.embed_documents([a for a, _ in PAIRS])
    right = embedder.embed_documents([b for _, b in PAIRS])
    return {"model": spec.name, "supports_mrl": spec.supports_mrl, "pairs": len(PAIRS),
            "rows": pair_similarity_table(left, right, dims)}
