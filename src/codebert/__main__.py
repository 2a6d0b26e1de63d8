from codebert.cli import main

raise SystemExit(main())
