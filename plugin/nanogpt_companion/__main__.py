from nanogpt_companion.cli import main

raise SystemExit(main())
