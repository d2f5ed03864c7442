from reasonrl.core.cli import main

raise SystemExit(main())
