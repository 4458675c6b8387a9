from nanogpt_companion.launch import main

raise SystemExit(main())
