"""Repository factories: real git repositories with Python files that have diagnostics."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path

from stomper import git

IDENTITY = {"user.name": "stomper tests", "user.email": "tests@stomper.invalid"}

RUFF_CONFIG = """\
[tool.ruff]
line-length = 100
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "I", "UP"]
"""

# Snippets, each a block of module-level code. The fixable ones are fixed by ruff's safe fixes.
FIXABLE = {
    "F401": "import os\n",
    "F541": 'GREETING = f"hello"\n',
    "E713": "def missing(key, table):\n    return not key in table\n",
    "UP039": "class Box():\n    size = 1\n",
}
UNFIXABLE = {
    "F821": "def total():\n    return subtotal + 1\n",
    "E722": "def safe(call):\n    try:\n        return call()\n    except:\n        return None\n",
    "E741": "def ell():\n    l = 1\n    return l\n",
}
CLEAN = "def add(a: int, b: int) -> int:\n    return a + b\n"


def make_repo(root: Path, files: Mapping[str, str | bytes], *, message: str = "initial") -> Path:
    """A repository at ``root`` whose first commit holds ``files``."""
    root.mkdir(parents=True, exist_ok=True)
    git.git_sync(root, "init", "--quiet", "--initial-branch=main")
    for key, value in IDENTITY.items():
        git.git_sync(root, "config", key, value)
    git.git_sync(root, "config", "commit.gpgsign", "false")
    write_files(root, files)
    commit_all(root, message)
    return root


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def commit_all(root: Path, message: str) -> str:
    git.git_sync(root, "add", "--all")
    git.git_sync(root, "commit", "--quiet", "--allow-empty", "-m", message)
    return git.git_sync(root, "rev-parse", "HEAD").stdout.decode().strip()


def module(codes: list[str]) -> str:
    """A module with one snippet per code (known to FIXABLE or UNFIXABLE), and a clean tail."""
    blocks = [FIXABLE.get(code) or UNFIXABLE[code] for code in codes]
    imports = [block for block in blocks if block.startswith(("import", "from"))]
    rest = [block for block in blocks if block not in imports]
    return "".join(imports) + "\n\n" + "\n\n".join([*rest, CLEAN])


def sample_project(files: int = 24, *, seed: int = 7) -> dict[str, str]:
    """A package with a mix of diagnostics: some files fully fixable, some partly, some not."""
    rng = random.Random(seed)
    project: dict[str, str] = {"pyproject.toml": RUFF_CONFIG, "shop/__init__.py": ""}
    fixable, unfixable = sorted(FIXABLE), sorted(UNFIXABLE)
    for number in range(files):
        kind = number % 4
        if kind in (0, 1):
            codes = rng.sample(fixable, rng.randint(1, 3))
        elif kind == 2:
            codes = rng.sample(fixable, 1) + rng.sample(unfixable, 1)
        else:
            codes = rng.sample(unfixable, rng.randint(1, 2))
        project[f"shop/module_{number:02d}.py"] = module(sorted(codes))
    return project


def review_project() -> dict[str, str]:
    """Two small packages with their tests, for ``stomper demo review``: the shipped fake
    reviewer finds something in each module, and one of its edits (the one a
    ``fake-review:`` comment asks for) breaks the tests of its package."""
    return {
        "inventory/__init__.py": '"""Stock and prices."""\n',
        "inventory/stock.py": (
            "def find(items, name):\n"
            "    for item in items:\n"
            '        if item.get("name") == name:\n'
            "            return item\n"
            "    return None\n"
            "\n"
            "\n"
            "def is_missing(item):\n"
            "    return item == None\n"
        ),
        "inventory/pricing.py": (
            "def price(text):\n"
            "    try:\n"
            "        return float(text)\n"
            "    except:\n"
            "        return 0.0\n"
        ),
        "inventory/test_inventory.py": (
            "import unittest\n"
            "\n"
            "from inventory.pricing import price\n"
            "from inventory.stock import find, is_missing\n"
            "\n"
            "\n"
            "class InventoryTest(unittest.TestCase):\n"
            "    def test_find(self):\n"
            '        self.assertEqual(find([{"name": "a"}], "a"), {"name": "a"})\n'
            "        self.assertTrue(is_missing(None))\n"
            "\n"
            "    def test_price(self):\n"
            '        self.assertEqual(price("2.5"), 2.5)\n'
            '        self.assertEqual(price("x"), 0.0)\n'
        ),
        "geometry/__init__.py": '"""Shapes and units."""\n',
        "geometry/shapes.py": (
            "def area(width, height):  # fake-review: def area => def surface_area\n"
            "    return width * height\n"
        ),
        "geometry/units.py": (
            "def to_metres(value, unit):\n"
            "    if unit == None:\n"
            "        return value\n"
            '    return value * {"cm": 0.01, "mm": 0.001}[unit]\n'
        ),
        "geometry/test_geometry.py": (
            "import unittest\n"
            "\n"
            "from geometry.shapes import area\n"
            "from geometry.units import to_metres\n"
            "\n"
            "\n"
            "class GeometryTest(unittest.TestCase):\n"
            "    def test_area(self):\n"
            "        self.assertEqual(area(2, 3), 6)\n"
            "\n"
            "    def test_units(self):\n"
            "        self.assertEqual(to_metres(5, None), 5)\n"
            '        self.assertAlmostEqual(to_metres(50, "cm"), 0.5)\n'
        ),
    }


def tasks_project(python: str = "python") -> dict[str, str]:
    """A small package with its tests and a ``tasks.toml`` of 8 tasks, for ``stomper demo
    run``: dependencies, two tasks that write one file (never at once), one that creates
    files, and one whose first attempt fails its verification. The agent is the fake CLI
    agent stomper ships: each prompt's ``fake-agent:`` lines say what it does."""
    return {
        "shop/__init__.py": '"""A small shop."""\n',
        "shop/config.py": "TIMEOUT = 5\n",
        "shop/client.py": (
            "from shop.config import TIMEOUT\n\n\n"
            "def fetch(url):\n"
            '    return f"GET {url} (timeout {TIMEOUT}s)"\n'
        ),
        "shop/prices.py": "def price(cents):\n    return cents / 100\n",
        "shop/cart.py": (
            "from shop.prices import price\n\n\n"
            "def total(items):\n"
            "    return sum(price(cents) for cents in items)\n"
        ),
        "shop/util.py": "def slug(text):\n    return text.lower().replace(' ', '-')\n",
        "tests/__init__.py": "",
        "tests/test_shop.py": (
            "import unittest\n\n"
            "from shop.cart import total\n"
            "from shop.client import fetch\n"
            "from shop.util import slug\n\n\n"
            "class ShopTest(unittest.TestCase):\n"
            "    def test_fetch(self):\n"
            '        self.assertIn("GET /items", fetch("/items"))\n\n'
            "    def test_total(self):\n"
            "        self.assertEqual(total([100, 250]), 3.5)\n\n"
            "    def test_slug(self):\n"
            '        self.assertEqual(slug("Blue Mug"), "blue-mug")\n'
        ),
        "README.md": "# shop\n",
        "tasks.toml": _DEMO_TASKS.replace("{python}", json.dumps(python)[1:-1]),
    }


_DEMO_TASKS = r'''# Worked by the fake CLI agent stomper ships,
# which does what the `fake-agent:` lines say.
[defaults]
agent = "command"
verify = "'{python}' -m unittest discover -q -s tests -t ."

[[task]]
id = "config-v2"
prompt = """Raise the client's timeout to 10 seconds.
fake-agent: sleep 0.8
fake-agent: replace shop/config.py: TIMEOUT = 5 => TIMEOUT = 10"""
files = ["shop/config.py"]

[[task]]
id = "retry-client"
prompt = """Retry a failed fetch three times.
fake-agent: sleep 0.6
fake-agent: append shop/client.py: \\nRETRIES = 3"""
files = ["shop/client.py"]
reads = ["shop/config.py"]
depends_on = ["config-v2"]

[[task]]
id = "prices-cents"
prompt = """Round prices to the cent.
fake-agent: sleep 0.5
fake-agent: replace shop/prices.py: return cents / 100 => return round(cents / 100, 2)"""
files = ["shop/prices.py"]

[[task]]
id = "cart-empty"
prompt = """Let the total of no items at all be 0.
fake-agent: sleep 0.5
fake-agent: replace shop/cart.py: def total(items): => def total(items=()):"""
files = ["shop/cart.py"]
reads = ["shop/prices.py"]
depends_on = ["prices-cents"]

[[task]]
id = "slug-strip"
prompt = """Strip the spaces around a slug.
fake-agent: sleep 0.4
fake-agent: once replace shop/util.py: text.lower() => text.strip(.lower()
fake-agent: retry replace shop/util.py: text.lower() => text.strip().lower()"""
files = ["shop/util.py"]

[[task]]
id = "docs-client"
prompt = """Say in the README how the client retries.
fake-agent: sleep 0.4
fake-agent: append README.md: \\n## Client\\n\\n`fetch(url)` tries three times."""
files = ["README.md"]
depends_on = ["retry-client"]

[[task]]
id = "docs-prices"
prompt = """Say in the README how prices are rounded.
fake-agent: sleep 0.4
fake-agent: append README.md: \\n## Prices\\n\\nPrices are rounded to the cent."""
files = ["README.md"]

[[task]]
id = "discounts"
prompt = """Add discounts, with their tests.
fake-agent: sleep 0.5
fake-agent: write shop/discounts.py: def discount(total, percent):
fake-agent: append shop/discounts.py:     return round(total * (100 - percent) / 100, 2)
fake-agent: write tests/test_discounts.py: import unittest\\n\\nfrom shop.discounts import discount
fake-agent: append tests/test_discounts.py: \\n\\nclass DiscountTest(unittest.TestCase):
fake-agent: append tests/test_discounts.py:     def test_discount(self):
fake-agent: append tests/test_discounts.py:         self.assertEqual(discount(10.0, 25), 7.5)"""
files = ["shop/discounts.py", "tests/test_discounts.py"]
depends_on = ["cart-empty"]
'''
