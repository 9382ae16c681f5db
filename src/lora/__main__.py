"""`python -m lora <command>`: the same as the `lora` command."""

from lora.scripts.commands import main

raise SystemExit(main())
