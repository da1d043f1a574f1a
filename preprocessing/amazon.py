"""Amazon Reviews 2023: product reviews of four categories (Beauty, Fashion, Office, Grocery).

Source: the 2023 release of McAuley Lab (Hou et al., arXiv 2403.03952),
https://amazon-reviews-2023.github.io — per category, JSON lines, plain or gz:

- ``<Category>.jsonl`` (``raw/review_categories/``) — ``rating`` (1.0-5.0), ``title``, ``text``,
  ``images``, ``asin``, ``parent_asin``, ``user_id``, ``timestamp`` (unix milliseconds),
  ``helpful_vote``, ``verified_purchase``;
- ``meta_<Category>.jsonl`` (``raw/meta_categories/``) — ``parent_asin``, ``main_category``,
  ``title``, ``average_rating``, ``rating_number``, ``features`` (list), ``description`` (list),
  ``price`` (number or null), ``store``, ``categories`` (list), ``details`` (dict; may hold
  ``"Date First Available": "March 5, 2019"``), ``images``, ``videos``, ``bought_together``.

Datasets and the category files they read (``--category`` picks another, e.g.
``Beauty_and_Personal_Care``): ``amazon-beauty`` All_Beauty, ``amazon-fashion`` Amazon_Fashion,
``amazon-office`` Office_Products, ``amazon-grocery`` Grocery_and_Gourmet_Food.

Raws: items are products by ``parent_asin`` (variants merged, as the release recommends); one
interaction per review with the rating, the review headline and whether the purchase was
verified. Rules: reviews of products missing from the meta file and repeated identical reviews
are dropped; products without a "Date First Available" get no release-time rule (repaired).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from usermirrorer.preprocessing.base import (
    Converter,
    ConverterOption,
    ConvertReport,
    SourceProblems,
)
from usermirrorer.preprocessing.formats import (
    RawTables,
    clean_text,
    find_source_file,
    iter_records,
    parse_date,
)

__all__ = ["CATEGORIES", "CONVERTER", "convert"]

# dataset name -> category file stem of the 2023 release
CATEGORIES = {
    "amazon-beauty": "All_Beauty",
    "amazon-fashion": "Amazon_Fashion",
    "amazon-office": "Office_Products",
    "amazon-grocery": "Grocery_and_Gourmet_Food",
}


def _source_format(category: str) -> str:
    return (f"Amazon Reviews 2023 (McAuley Lab): {category}.jsonl + meta_{category}.jsonl, "
            "JSON lines, plain or .gz")


def _product(meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    price = meta.get("price")
    price = f"${price:.2f}" if isinstance(price, (int, float)) and not isinstance(price, bool) else ""
    rating = meta.get("average_rating")
    count = meta.get("rating_number")
    stars = ""
    if isinstance(rating, (int, float)):
        stars = f"{rating:g} out of 5" + (f" ({count:,} ratings)" if isinstance(count, int) else "")
    categories = [c for c in meta.get("categories") or [] if isinstance(c, str)]
    details = meta.get("details") if isinstance(meta.get("details"), dict) else {}
    description = {
        "title": clean_text(meta.get("title"), 120),
        "brand": clean_text(meta.get("store")),
        "category": categories[-1] if categories else clean_text(meta.get("main_category")),
        "price": price,
        "rating": stars,
        "highlights": clean_text("; ".join(clean_text(f) for f in meta.get("features") or []), 160),
    }
    features = {"release_time": parse_date(details.get("Date First Available"), "%B %d, %Y"),
                "price": meta.get("price") if price else None}
    return description, features


def convert(source: Path, project_path: Path, options: dict[str, Any], *, dataset: str) -> ConvertReport:
    """Convert one Amazon 2023 category in ``source`` (see the module docstring)."""
    category = options.get("category") or CATEGORIES[dataset]
    fmt = _source_format(category)
    report = ConvertReport(dataset, str(source))
    problems = SourceProblems()
    tables = RawTables(dataset, report)
    reviews_path = find_source_file(source, f"{category}.jsonl",
                                    f"raw/review_categories/{category}.jsonl", source_format=fmt)
    meta_path = find_source_file(source, f"meta_{category}.jsonl",
                                 f"raw/meta_categories/meta_{category}.jsonl", source_format=fmt)

    for line, meta in iter_records(meta_path, problems):
        if not meta.get("parent_asin"):
            problems.add(meta_path, line, "parent_asin", "missing; expected the product id")
            continue
        description, features = _product(meta)
        if features["release_time"] is None:
            report.repair("no-release-date", "no 'Date First Available' in details: kept "
                          "without a release-time rule", f"{meta_path}:{line}: details")
        tables.add_item(str(meta["parent_asin"]), description, features, f"{meta_path}:{line}")

    for line, review in iter_records(reviews_path, problems):
        where = (reviews_path, line)
        stamp = review.get("timestamp")
        if not isinstance(stamp, (int, float)) or not review.get("user_id"):
            problems.add(reviews_path, line, "timestamp/user_id",
                         f"expected unix milliseconds and a user id, got {stamp!r}")
            continue
        item = review.get("parent_asin") or review.get("asin")
        behavior = {"rating": review.get("rating"), "headline": clean_text(review.get("title"), 80),
                    "verified_purchase": review.get("verified_purchase")}
        tables.add_interaction(str(review["user_id"]), str(item), int(stamp) // 1000, behavior, where)
    problems.raise_if_any(dataset, fmt)
    tables.write(project_path)
    report.notes["category"] = category
    return report


_CATEGORY_OPTION = ConverterOption(
    "category", str, None,
    "Amazon: the 2023 category file stem to read instead of the dataset's own "
    "(e.g. Beauty_and_Personal_Care)")

CONVERTER = [
    Converter(
        name=name,
        source_format=_source_format(category),
        needs_source=True,
        convert=partial(convert, dataset=name),
        options=(_CATEGORY_OPTION,),
        description=f"Amazon {category.replace('_', ' ')} reviews with ratings (2023 release)",
    )
    for name, category in CATEGORIES.items()
]
