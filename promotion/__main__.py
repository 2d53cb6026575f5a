from promotion.cli import main

raise SystemExit(main())
