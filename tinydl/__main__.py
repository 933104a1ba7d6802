from tinydl.cli import main

raise SystemExit(main())
